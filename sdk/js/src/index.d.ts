// Type declarations of the BSN SDK for Node.js (the implementation is plain ES modules).

import type { KeyObject, X509Certificate } from "node:crypto";

export class BsnError extends Error {}
export class LocalError extends BsnError {}
export class MalformedError extends LocalError {}
export class TooLargeError extends LocalError {}
export class VerificationError extends BsnError {}
export class InvalidDocument extends VerificationError {}
export class UnreachableError extends BsnError {}
export class TrustError extends BsnError {}
export class CertificateRefused extends BsnError {}
export class CertificateRevoked extends CertificateRefused {}
export class CertificateExpired extends CertificateRefused {}
export class CertificateUnknown extends CertificateRefused {}
export class ProblemError extends BsnError {
  status: number;
  slug: string;
  title: string;
  detail: string;
  body: Record<string, unknown>;
}
export class InvalidRequest extends ProblemError {}
export class Unauthorized extends ProblemError {}
export class Forbidden extends ProblemError {}
export class NotAMember extends Forbidden {}
export class RoleRequired extends Forbidden {}
export class NotFound extends ProblemError {}
export class NotHosted extends NotFound {}
export class Conflict extends ProblemError {}
export class DuplicateTransaction extends Conflict {}
export class NotAllCommitted extends Conflict {}
export class RetryLater extends ProblemError {}
export class StorageFull extends ProblemError {}
export class ServerError extends ProblemError {}
export function problem(status: number, body: Record<string, unknown>): ProblemError;

export type Op = { put: string; value: Buffer } | { delete: string };
export function put(key: string, value: string | Uint8Array): Op;
export function del(key: string): Op;
export interface TxBody { subchain: string; nonce: Uint8Array; creatorCert: Uint8Array; ops: Op[] }
export interface SignedTx { raw: Buffer; body: TxBody; bodyBytes: Buffer; signature: Buffer; id: Buffer; entryHash: Buffer }
export interface BlockHeader {
  kind: "config" | "transactions";
  height: number;
  previous: Buffer;
  entriesRoot: Buffer;
  membershipRevision: number;
  timestampMs: number;
  entryCount: number;
}
export interface Block { header: BlockHeader; entries: Buffer[]; hash: Buffer }
export function encodeBody(body: TxBody): Buffer;
export function decodeBody(bytes: Uint8Array): TxBody;
export function parseSignedTx(raw: Uint8Array): SignedTx;
export function signingMessage(body: Uint8Array): Buffer;
export function assemble(body: Uint8Array, signature: Uint8Array): Buffer;
export function encodeHeader(h: BlockHeader): Buffer;
export function decodeHeader(bytes: Uint8Array): BlockHeader;
export function headerHash(h: BlockHeader): Buffer;
export function decodeBlock(bytes: Uint8Array): Block;
export function checkChain(blocks: Block[], previous?: Buffer): void;
export function sha256(data: Uint8Array): Buffer;

export namespace merkle {
  function leafHash(data: Uint8Array): Buffer;
  function nodeHash(left: Buffer, right: Buffer): Buffer;
  function root(leafHashes: Buffer[]): Buffer;
  function rootOfEntries(entryHashes: Buffer[]): Buffer;
  function verifyInclusion(index: number, size: number, leaf: Buffer, proof: Buffer[], root: Buffer): boolean;
  function verifyConsistency(first: number, second: number, firstRoot: Buffer, secondRoot: Buffer, proof: Buffer[]): boolean;
}

export interface Envelope { payload: string; signature: string }
export class MembershipKey {
  constructor(raw: Uint8Array);
  static fromBase64(s: string): MembershipKey;
  readonly raw: Buffer;
  verifyStatement(e: Envelope): Record<string, any>;
  verifyDirectory(e: Envelope): Record<string, any>;
  verifyHeartbeat(e: Envelope): Record<string, any>;
}
export interface KeyHandover { payload: string; from_signature: string; to_signature: string }
export function verifyHandover(h: KeyHandover): { terms: Record<string, any>; from: Buffer; to: Buffer };
export class MembershipKeys {
  constructor(pinned: MembershipKey, handovers?: KeyHandover[]);
  readonly keys: MembershipKey[];
  readonly current: MembershipKey;
  learn(handovers: KeyHandover[]): boolean;
  verifyStatement(e: Envelope): Record<string, any>;
  verifyDirectory(e: Envelope): Record<string, any>;
  verifyHeartbeat(e: Envelope): Record<string, any>;
}
export interface Checkpoint { origin: string; size: number; root: Buffer }
export class LogKey {
  constructor(vkey: string);
  name: string;
  verifyCheckpoint(note: string): Checkpoint;
}
export function decodeLeaf(bytes: Uint8Array): Record<string, any>;

export type KeyType = "p256" | "p384" | "ed25519";
export function generateKey(kind?: KeyType): KeyObject;
export function csrPem(key: KeyObject): string;
export function sign(key: KeyObject, message: Uint8Array): Buffer;
export function verifySignature(certDer: Uint8Array, message: Uint8Array, signature: Uint8Array): void;
export function verifyTx(raw: Uint8Array): SignedTx;
export class Credentials {
  static load(certFile: string, keyFile?: string): Credentials;
  static fromPem(certPem: string, keyPem: string): Credentials;
  key: KeyObject;
  chain: X509Certificate[];
  readonly certificateDer: Buffer;
  readonly spiffeId: string;
  signTx(subchain: string, ops: Op[], nonce?: Uint8Array): Buffer;
}
export function writeCredentials(dir: string, key: KeyObject, certificatePem: string, chainPem: string): Credentials;

export interface Receipt { leaf_index: number; tree_size: number; inclusion_proof: string[]; checkpoint: string }
export interface Issued {
  serial: string;
  spiffe_id: string;
  not_before: string;
  not_after: string;
  certificate: string;
  chain: string;
  receipt: Receipt | null;
  credentials: Credentials;
}
export interface Options { timeoutMs?: number }
export class Ca {
  constructor(url: string, bundle: string, credentials?: Credentials | null, options?: Options);
  close(): void;
  enroll(id: string, secret: string, out: string, keyType?: KeyType): Promise<Issued>;
  renew(out: string, options?: { rekey?: boolean; keyType?: KeyType }): Promise<Issued>;
  membershipKey(): Promise<MembershipKey>;
  membershipKeys(pinned?: MembershipKey): Promise<MembershipKeys>;
  join(subchain: string, role?: "reader" | "writer" | "admin", note?: string): Promise<Record<string, any>>;
  subchain(subchain: string): Promise<Record<string, any>>;
  get(path: string, params?: Record<string, string | number>): Promise<any>;
  post(path: string, body: unknown): Promise<any>;
}
export interface Committed { id: string; height: number; index: number }
export interface Transaction {
  id: string;
  creator: string;
  ops: Array<{ put: string; value: string } | { delete: string }>;
  height: number;
  index: number;
  blockHash: string;
  header: BlockHeader;
}
export class Node {
  constructor(url: string, bundle: string, credentials: Credentials, options?: Options);
  credentials: Credentials;
  close(): void;
  info(subchain: string): Promise<Record<string, any>>;
  submit(subchain: string, ops: Op[]): Promise<Committed>;
  submitBatch(subchain: string, batch: Op[][]): Promise<Committed[]>;
  submitSigned(subchain: string, signed: Uint8Array[]): Promise<Committed[]>;
  get(subchain: string, key: string): Promise<Buffer | null>;
  range(subchain: string, options?: { start?: string; end?: string; limit?: number }): Promise<{ items: Array<[string, Buffer]>; more: boolean }>;
  transaction(subchain: string, txid: string): Promise<Transaction>;
  block(subchain: string, height: number): Promise<Block>;
  blocks(subchain: string, start?: number, limit?: number): Promise<Block[]>;
  follow(subchain: string, start?: number, options?: { previous?: Buffer | null; giveUpAfterMs?: number }): AsyncGenerator<Block>;
}
