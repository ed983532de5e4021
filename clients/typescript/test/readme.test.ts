// The README's example is examples/readme.ts, which the build type-checks.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

test("the README example is examples/readme.ts (so it compiles)", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const example = readFileSync(new URL("../../examples/readme.ts", import.meta.url), "utf8");
  const block = /## Example \(Node\)\n\n```ts\n([\s\S]*?)```/.exec(readme);
  assert.ok(block, "README has an example");
  assert.equal(example.replace(/^(\/\/.*\n)+/, ""), block[1]);
});
