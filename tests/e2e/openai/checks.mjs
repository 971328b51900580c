// checks.mjs: the little harness client.mjs and agents.mjs share. check()
// runs one named assertion (a function returning true, or a promise of it)
// and prints "ok: ..." or "FAIL: ..."; finish() prints "N passed, N failed"
// and exits 1 when any failed.
let passed = 0, failed = 0;

export async function check(what, fn) {
  try {
    const ok = await fn();
    if (ok) { passed++; console.log(`ok: ${what}`); }
    else { failed++; console.log(`FAIL: ${what}`); }
  } catch (e) {
    failed++;
    console.log(`FAIL: ${what}: ${e.constructor.name}: ${e.message}`);
  }
}

export function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
