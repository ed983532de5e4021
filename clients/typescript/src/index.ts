export { SwitchyardClient } from "./client.js";
export type { ClientOptions, Delivery, DisconnectInfo } from "./client.js";
export { SwitchyardError, ConnectionClosedError, PermanentError, RequestTimeoutError } from "./errors.js";
export { domSocketFactory, nodeSocketFactory } from "./socket.js";
export type { SocketClose, WebSocketConstructor, WebSocketLike } from "./socket.js";
export type * from "./types.js";
