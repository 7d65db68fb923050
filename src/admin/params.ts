// Query parameters of the admin routes.
import { ApiError } from "../errors.ts";

/** An integer query parameter from 1 to `max`; undefined when absent or empty; 400 `bad_request` otherwise. */
export function positiveInt(name: string, value: string | undefined, max: number): number | undefined {
  if (value === undefined || value === "") return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max) {
    throw new ApiError("bad_request", `${name} must be an integer from 1 to ${max}`);
  }
  return Number(value);
}
