// One real `edgenode serve` on loopback with its own temporary data dir, started as
// docs/api.md ("Process") says; its port, pin and id come from its `ready` line. Every
// node also serves onboarding on plain HTTP (`onboarding_listen`, from a small config
// file): the trust page and its CA (`/ca.pem`), which is what a person's browser is
// told to trust (lib/browser.mjs).

import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 20_000;
const STDERR_KEPT_BYTES_MAX = 256 * 1024;
// A free port picked here may be taken by someone else before the node binds it.
const START_ATTEMPTS_MAX = 3;

export const WORKSPACE = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** The binary under test: `EDGENODE_BIN`, else `<target dir>/debug/edgenode`. */
export function nodeBinary() {
  if (process.env.EDGENODE_BIN) return process.env.EDGENODE_BIN;
  const targetDir = process.env.CARGO_TARGET_DIR ? resolve(WORKSPACE, process.env.CARGO_TARGET_DIR) : join(WORKSPACE, 'target');
  return join(targetDir, 'debug', 'edgenode');
}

/** The provisioning tool that prints box labels, built beside the node binary. */
export function imageBuilderBinary() {
  return join(dirname(nodeBinary()), 'image-builder');
}

/**
 * Starts a node and waits for `edgenode ready listen=ADDR pin=PIN node_id=ID`; on a
 * fresh data dir and any free port unless `dataDir` and `listen` say otherwise, and
 * with its onboarding listener on `onboardingListen` (default: a free loopback port).
 *
 * Returns `{name, origin, onboarding, listen, onboardingListen, pin, nodeId, dataDir,
 * stderr(), stop({keepData})}`:
 * - `origin`: `https://127.0.0.1:<port>`, served with a leaf of the node's own CA;
 * - `onboarding`: `http://127.0.0.1:<port>`, plain HTTP: `/` (the trust page),
 *   `/ca.pem` (this node's CA and its siblings'), `/ca.crt`, `/ca.mobileconfig`;
 * - `dataDir` holds `ca.crt` and `ca.key` (PEM), kept across a restart on the same
 *   `dataDir`, so a browser that trusts the node keeps trusting it.
 */
export async function startNode({ name, claimCode, dataDir, listen = '127.0.0.1:0', onboardingListen }) {
  dataDir = dataDir || (await mkdtemp(join(tmpdir(), 'edgenode-web-')));
  const configDir = await mkdtemp(join(tmpdir(), 'edgenode-web-config-'));
  try {
    for (let attempt = 1; ; attempt++) {
      const onboardingAddress = onboardingListen || `127.0.0.1:${await freeLoopbackPort()}`;
      try {
        return await spawnNode({ name, claimCode, dataDir, listen, onboardingAddress, configDir });
      } catch (error) {
        const portTaken = /onboarding/i.test(error.message) && /in use/i.test(error.message);
        if (!portTaken || onboardingListen || attempt >= START_ATTEMPTS_MAX) throw error;
      }
    }
  } catch (error) {
    await rm(configDir, { recursive: true, force: true });
    throw error;
  }
}

async function spawnNode({ name, claimCode, dataDir, listen, onboardingAddress, configDir }) {
  const configFile = join(configDir, 'edgenode.toml');
  await writeFile(configFile, `onboarding_listen = ${JSON.stringify(onboardingAddress)}\n`);
  const child = spawn(
    nodeBinary(),
    ['serve', '--config', configFile, '--data-dir', dataDir, '--listen', listen, '--name', name, '--claim-code', claimCode, '--no-mdns'],
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
  }).catch((error) => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    throw error;
  });
  return {
    ...ready,
    name,
    origin: `https://${ready.listen}`,
    onboardingListen: onboardingAddress,
    onboarding: `http://${onboardingAddress}`,
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
      await rm(configDir, { recursive: true, force: true });
      if (!keepData) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
function freeLoopbackPort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}
