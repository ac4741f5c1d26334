// What the OpenAI scripts share (imported; not a script of its own).
import assert from "node:assert/strict";

/** The usage the scenario agent reports. */
export const USAGE = { prompt_tokens: 7, completion_tokens: 5, total_tokens: 12 };

/** Awaits `promise`, which must reject with an instance of `type`; `check` sees the error. */
export async function rejects(promise, type, check) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof type, `${err?.constructor?.name}: ${err?.message} is not a ${type.name}`);
    check(err);
    return;
  }
  assert.fail(`no ${type.name} raised`);
}
