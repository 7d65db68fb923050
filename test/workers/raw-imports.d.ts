// Vite's `?raw` imports: a file's text as the default export (test/workers/security-production.test.ts reads
// wrangler.toml this way, as the Worker tests cannot read files).
declare module "*?raw" {
  const text: string;
  export default text;
}
