// One real `edgenode serve` on loopback with its own temporary data dir, started as
// docs/api.md ("Process") says; its port, pin and id come from its `ready` line.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000;
const STDERR_KEPT_BYTES_MAX = 256 * 1024;

export const WORKSPACE = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** The binary under test: `EDGENODE_BIN`, else `<target dir>/debug/edgenode`. */
export function nodeBinary() {
  if (process.env.EDGENODE_BIN) return process.env.EDGENODE_BIN;
  const targetDir = process.env.CARGO_TARGET_DIR ? resolve(WORKSPACE, process.env.CARGO_TARGET_DIR) : join(WORKSPACE, 'target');
  return join(targetDir, 'debug', 'edgenode');
}

/**
 * Starts a node and waits for `edgenode ready listen=ADDR pin=PIN node_id=ID`; on a
 * fresh data dir and any free port unless `dataDir` and `listen` say otherwise.
 * Returns `{origin, listen, pin, nodeId, dataDir, stderr(), stop({keepData})}`.
 */
export async function startNode({ name, claimCode, dataDir, listen = '127.0.0.1:0' }) {
  dataDir = dataDir || (await mkdtemp(join(tmpdir(), 'edgenode-web-')));
  const child = spawn(
    nodeBinary(),
    ['serve', '--data-dir', dataDir, '--listen', listen, '--name', name, '--claim-code', claimCode, '--no-mdns'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } },
  );
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-STDERR_KEPT_BYTES_MAX);
  });
  const exited = new Promise((resolveExit) => child.once('exit', (code, signal) => resolveExit({ code, signal })));
  const ready = await new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line within ${READY_TIMEOUT_MS} ms; stderr:\n${stderr}`)), READY_TIMEOUT_MS);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${nodeBinary()}: ${error.message} (build it: cargo build -p edgenode)`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the node exited (code ${code}, signal ${signal}) before it was ready; stderr:\n${stderr}`));
    });
    createInterface({ input: child.stdout }).on('line', (line) => {
      const match = line.match(/^edgenode ready listen=(\S+) pin=(\S+) node_id=(\S+)/);
      if (match) {
        clearTimeout(timer);
        resolveReady({ listen: match[1], pin: match[2], nodeId: match[3] });
      }
    });
  });
  return {
    ...ready,
    origin: `https://${ready.listen}`,
    dataDir,
    stderr: () => stderr,
    /** SIGTERM, and the data dir removed unless `keepData`. */
    async stop({ keepData = false } = {}) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }
      if (!keepData) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
