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
