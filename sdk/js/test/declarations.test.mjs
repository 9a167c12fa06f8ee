// src/index.d.ts declares exactly what src/index.js exports at run time (CI also compiles
// test/types.ts against the declarations with tsc).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as bsn from "../src/index.js";

test("the declarations name every runtime export, and nothing else", () => {
  const dts = readFileSync(new URL("../src/index.d.ts", import.meta.url), "utf8");
  const declared = [...dts.matchAll(/^export (?:class|function|namespace|const) (\w+)/gm)].map((m) => m[1]).sort();
  const exported = Object.keys(bsn).sort();
  assert.deepEqual(declared, exported);
  for (const name of declared) {
    const kind = dts.match(new RegExp(`^export (class|function|namespace|const) ${name}\\b`, "m"))[1];
    const value = bsn[name];
    if (kind === "class") assert.ok(typeof value === "function" && /^class\b/.test(value.toString()), `${name} is a class`);
    if (kind === "function") assert.equal(typeof value, "function", `${name} is a function`);
    if (kind === "namespace") assert.equal(typeof value, "object", `${name} is an object`);
  }
});
