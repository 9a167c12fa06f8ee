// BSN SDK for Node.js: participants' keys and certificates, signed transactions on a city node's
// ledger with every proof verified, and the CA's signed documents checked offline.
//
// Features: enroll and renew (keys made here), PEM credentials (the portal's one-file bundle as
// is), sign and submit transactions and wait for the commit, read state and ranges, verified
// transaction proofs, blocks and a block stream with the hash chain verified (resuming across
// restarts), membership statements, directory, heartbeats and log checkpoints verified with pinned
// keys; typed errors for every problem type and for refused client certificates.
// Non-features: no server code; HTTP/1.1 only; Node.js 20+, no browser build.

export * from "./errors.js";
export { put, del, encodeBody, decodeBody, parseSignedTx, signingMessage, assemble, encodeHeader, decodeHeader, headerHash, decodeBlock, checkChain, sha256 } from "./encoding.js";
export * as merkle from "./merkle.js";
export { MembershipKey, MembershipKeys, LogKey, decodeLeaf, verifyHandover } from "./signed.js";
export { Credentials, generateKey, csrPem, sign, verifySignature, verifyTx, writeCredentials } from "./keys.js";
export { Ca, Node } from "./client.js";
