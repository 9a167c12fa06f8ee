// Compiled by `tsc -p test/tsconfig.json` in CI (never run): the declarations in src/index.d.ts
// describe what an app written in TypeScript does with the SDK, and refuse what it must not do.
import * as bsn from "../src/index.js";

async function app(url: string, bundle: string, certFile: string, keyFile: string): Promise<number> {
  const creds: bsn.Credentials = bsn.Credentials.load(certFile, keyFile);
  const author: string = creds.spiffeId.split("/").at(-1) ?? "";
  const node = new bsn.Node(url, bundle, creds, { timeoutMs: 5000 });
  try {
    const done: bsn.Committed = await node.submit("demo", [bsn.put("notes/1", JSON.stringify({ author })), bsn.del("old")]);
    const batch: bsn.Committed[] = await node.submitBatch("demo", [[bsn.put("a", new Uint8Array([1]))], [bsn.del("b")]]);
    const signed: Buffer = creds.signTx("demo", [bsn.put("c", "d")]);
    await node.submitSigned("demo", [signed]);
    const value: Buffer | null = await node.get("demo", "notes/1");
    const { items, more }: { items: Array<[string, Buffer]>; more: boolean } = await node.range("demo", { start: "notes/", limit: 10 });
    const tx: bsn.Transaction = await node.transaction("demo", done.id);
    const header: bsn.BlockHeader = tx.header;
    const blocks: bsn.Block[] = await node.blocks("demo", 0, 10);
    bsn.checkChain(blocks);
    for await (const block of node.follow("demo", done.height, { giveUpAfterMs: 1000 })) {
      for (const entry of block.entries) {
        for (const op of bsn.parseSignedTx(entry).body.ops) {
          if ("put" in op) console.log(op.put, op.value.length);
          else console.log(op.delete);
        }
      }
      break;
    }
    return batch.length + (value?.length ?? 0) + items.length + Number(more) + header.height;
  } catch (e) {
    if (e instanceof bsn.CertificateRevoked || e instanceof bsn.CertificateExpired) return -1;
    if (e instanceof bsn.ProblemError) return e.status;
    throw e;
  } finally {
    node.close();
  }
}

async function ca(url: string, bundle: string): Promise<void> {
  const c = new bsn.Ca(url, bundle);
  const issued: bsn.Issued = await c.enroll("alice", "secret", "/tmp/alice", "p256");
  const key: bsn.MembershipKey = await c.membershipKey();
  const keys: bsn.MembershipKeys = await c.membershipKeys(key);
  const learned: boolean = keys.learn([]);
  console.log(keys.current.raw.length, keys.keys.length, learned);
  const member = new bsn.Ca(url, bundle, issued.credentials);
  await member.join("demo", "writer");
  const statement = key.verifyStatement(await member.subchain("demo") as bsn.Envelope);
  console.log(statement, issued.receipt?.leaf_index);
  // @ts-expect-error a role is reader, writer or admin
  await member.join("demo", "owner");
  // @ts-expect-error a key type is p256, p384 or ed25519
  await c.enroll("bob", "s", "/tmp/bob", "rsa");
  // @ts-expect-error an operation is a put or a delete
  const bad: bsn.Op = { put: "k" };
  console.log(bad);
}

export { app, ca };
