// Tuning on a validation split carved from the training data (filled in below).
export function tune(options: {
  testDays: number;
  validationDays: number;
  sessions: number;
  users: number;
}): Record<string, unknown> {
  return { protocol: "tune", options };
}
