// The shipped types (client.d.ts) check against a typed usage file with the TypeScript compiler.

import { execFile } from "node:child_process";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const here = path.dirname(fileURLToPath(import.meta.url));

test("tsc --noEmit: client.d.ts and test/types/usage.ts type-check, and the mistakes there are errors", async () => {
  const tsc = path.join(here, "../node_modules/typescript/bin/tsc");
  await promisify(execFile)(process.execPath, [tsc, "--noEmit", "-p", path.join(here, "types")]).catch((e) => {
    throw new Error(`tsc failed:\n${e.stdout}${e.stderr}`);
  });
});
