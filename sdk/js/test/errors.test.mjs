// Problem documents map to typed errors: the quota ones included.

import { test } from "node:test";
import assert from "node:assert/strict";
import { RetryLater, StorageFull, problem } from "../src/index.js";

const doc = (slug, status) => ({ type: `urn:bsn:problem:${slug}`, title: "t", status, detail: "d" });

test("quota problems have their own types", () => {
  assert.ok(problem(429, doc("rate-quota", 429)) instanceof RetryLater);
  const full = problem(507, doc("storage-quota", 507));
  assert.ok(full instanceof StorageFull);
  assert.equal(full.slug, "storage-quota");
  assert.ok(problem(429, doc("something-new", 429)) instanceof RetryLater, "an unknown slug falls back on the status");
});
