/**
 * What the parts of the agent client (process handles, file streams, watches)
 * need of the control connection; AgentClient implements it. Frames the guest
 * sends about an id (output, exits, acks, data, events) go to the sink
 * registered for that id, whose job is to check them.
 */
import type { Frame } from './protocol.js';

export interface Sink {
  frame(f: Frame): void;
  /** The connection is gone, or the sink was unregistered: nothing more comes. */
  end(): void;
}

export interface RequestOptions {
  /** The frame id (default: a fresh one). A request about a process or stream uses that one's id. */
  id?: number;
  timeoutMs?: number;
  /** Frames of the answer that come before its OK (PROC_INFO, FS_ENTRY), in order; an Error returned rejects the request with it. */
  collect?: (f: Frame) => Error | undefined;
  /** What the request is, for errors: "listing processes", "stat /x". */
  what?: string;
  /** Keep AGENT_ERROR as the code of guest errors (protocol-2 callers). */
  legacy?: boolean;
}

export interface Channel {
  readonly closed: boolean;
  /** A request answered by OK (resolved with it) or ERROR (rejected with a CellaError). Requests on one id are sent one after another. */
  request(type: number, body: Buffer | undefined, opts?: RequestOptions): Promise<Frame>;
  /** A frame that has no answer. */
  send(type: number, id: number, body?: Buffer): void;
  /** The same, resolved once the connection took it: a long stream of them waits for the guest. */
  sendDrained(type: number, id: number, body: Buffer): Promise<void>;
  /** An id no live process, stream or request of this connection uses. */
  allocId(): number;
  register(id: number, sink: Sink): void;
  /** Ends the sink for this id (its end() is called). */
  unregister(id: number): void;
  /** Rejects with AGENT_UNSUPPORTED when the guest speaks protocol 2. */
  requireV3(what: string): Promise<void>;
}
