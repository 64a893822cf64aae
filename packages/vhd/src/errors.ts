/**
 * Errors raised by the VHD library. Each names what was wrong and where, so a
 * person reading the message can find the bad bytes with a hex editor.
 */

/** A caller passed a bad argument: `field` names it, the message says why. */
export class VhdArgumentError extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'VhdArgumentError';
  }
}

/** The file is not a valid VHD: `structure` and `offset` say which bytes are wrong. */
export class VhdCorruptError extends Error {
  constructor(
    readonly structure: string,
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`corrupt VHD: ${structure} at offset ${offset}: ${reason}`);
    this.name = 'VhdCorruptError';
  }
}

/** The operation is valid VHD-wise but cannot be done to this disk (e.g. shrinking over data). */
export class VhdOperationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VhdOperationError';
  }
}

/**
 * The file system ran out of space (ENOSPC, or EDQUOT for a quota) in the middle of an
 * operation. Nothing on disk is corrupt: what was written is either durable and
 * referenced, or unreferenced; retry the same operation once space is back.
 */
export class VhdNoSpaceError extends Error {
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`no space left for ${path}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'VhdNoSpaceError';
  }
}

/** Whether `err` is the file system saying it is full. */
export function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}
