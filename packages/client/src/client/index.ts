export {
  HyperfarmClient,
  type HyperfarmClientOptions,
  type RetryInfo,
  type CallOptions,
  type OperationMethod,
} from './hyperfarm-client.js';
export { HyperfarmError, asHyperfarmError, provenNotApplied, retryable } from './errors.js';
export { OperationFailedError, type OperationRef, type WaitOptions } from './operations.js';
export { SAFETY, type Method, type RequestOf, type ResponseOf, type Safety } from './methods.js';
export { backoffDelay, systemClock, DEFAULT_BACKOFF, type BackoffOptions, type Clock } from './backoff.js';
export { parseEndpoints, resolveEndpoints, EndpointError, type EndpointSources } from './endpoints.js';
export type { WatchOptions } from './watch.js';
