/** Assertions about the errors lowtide throws. */
import { expect } from 'vitest';
import { LowtideError } from '../../lib/index.js';

/** The LowtideError `p` rejects with; fails the test when it resolves or rejects with something else. */
export async function rejection(p: Promise<unknown>): Promise<LowtideError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(LowtideError);
    return err as LowtideError;
  }
  throw new Error('expected a rejection');
}
