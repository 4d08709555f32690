#!/usr/bin/env node
// A virtplane client in Node, from the protos alone: @grpc/proto-loader reads
// protos/virtplane/v1/*.proto at run time (no generated code), @grpc/grpc-js
// speaks TLS trusting the controller's CA and sends the token as
// `authorization: Bearer <token>` metadata, as any gRPC client can.
//
//   VIRTPLANE_ADDRESS  the controller, host:port
//   VIRTPLANE_CA       the CA certificate (PEM) the controller's is signed by
//   VIRTPLANE_TOKEN    an API token (no authorization header when unset)
//
//   node client.js list
//   node client.js create --name NAME --kernel PATH [--initrd PATH] [--cmdline TEXT]
//   node client.js run    --name NAME --kernel PATH [--initrd PATH] [--cmdline TEXT]
//                         [--memory-mib N] [--timeout SECONDS]
//
// `run` creates the VM, starts it, waits on WatchVms until it is UP, stops it
// and deletes it. Every step prints one JSON line on stdout; a failed call
// prints {"step", "error": <gRPC code name>, "details"} and exits 1.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTOS = process.env.VIRTPLANE_PROTOS || path.join(__dirname, '..', '..', 'protos');
const CALL_SECONDS = 30;

class StepError extends Error {
  constructor(step, cause) {
    super(`${step}: ${cause.details || cause.message}`);
    this.step = step;
    this.code = cause.code;
    this.details = cause.details || cause.message;
  }
}

function emit(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

function loadApi() {
  const folder = path.join(PROTOS, 'virtplane', 'v1');
  const files = fs
    .readdirSync(folder)
    .filter((name) => name.endsWith('.proto'))
    .map((name) => `virtplane/v1/${name}`);
  const definition = protoLoader.loadSync(files, {
    includeDirs: [PROTOS],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).virtplane.v1;
}

function connect(api) {
  const address = process.env.VIRTPLANE_ADDRESS;
  const caFile = process.env.VIRTPLANE_CA;
  if (!address || !caFile) {
    throw new Error('set VIRTPLANE_ADDRESS and VIRTPLANE_CA (and VIRTPLANE_TOKEN)');
  }
  const tls = grpc.credentials.createSsl(fs.readFileSync(caFile));
  return new api.VmService(address, tls);
}

function metadata() {
  const meta = new grpc.Metadata();
  const token = process.env.VIRTPLANE_TOKEN;
  if (token) {
    meta.set('authorization', `Bearer ${token}`);
  }
  return meta;
}

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

function unary(vms, method, request) {
  return new Promise((resolve, reject) => {
    vms[method](request, metadata(), { deadline: deadline(CALL_SECONDS) }, (err, reply) => {
      if (err) {
        reject(new StepError(method, err));
      } else {
        resolve(reply);
      }
    });
  });
}

function describe(vm) {
  return { id: vm.id, name: vm.name, state: vm.status.state, host_id: vm.status.host_id };
}

// Follows WatchVms for one VM until its state is `state`; prints each state seen.
function waitFor(vms, vmId, state, seconds) {
  return new Promise((resolve, reject) => {
    let done = false;
    let last = '';
    const call = vms.WatchVms({ vm_ids: [vmId] }, metadata(), { deadline: deadline(seconds) });
    call.on('data', (change) => {
      if (done || !change.vm) {
        return;
      }
      if (change.kind === 'KIND_DELETED') {
        done = true;
        reject(new StepError('WatchVms', { code: grpc.status.NOT_FOUND, details: 'VM deleted' }));
        call.cancel();
        return;
      }
      const seen = change.vm.status.state;
      if (seen !== last) {
        last = seen;
        emit({ step: 'watch', kind: change.kind, ...describe(change.vm) });
      }
      if (seen === state) {
        done = true;
        resolve(change.vm);
        call.cancel();
      }
    });
    call.on('error', (err) => {
      if (!done) {
        done = true;
        reject(new StepError('WatchVms', err));
      }
    });
    call.on('end', () => {
      if (!done) {
        done = true;
        reject(new StepError('WatchVms', { code: grpc.status.UNKNOWN, details: 'stream ended' }));
      }
    });
  });
}

function specOf(opts) {
  if (!opts.kernel) {
    throw new Error('--kernel is required');
  }
  return {
    vcpus: 1,
    memory_mib: String(opts['memory-mib']),
    boot: { kernel_path: opts.kernel, initrd_path: opts.initrd, cmdline: opts.cmdline },
    nics: [{ name: 'nic0', kind: 'KIND_USER' }],
  };
}

async function list(vms) {
  const reply = await unary(vms, 'ListVms', {});
  emit({ step: 'listed', count: reply.vms.length, vms: reply.vms.map(describe) });
}

async function create(vms, opts) {
  const reply = await unary(vms, 'CreateVm', { name: opts.name, spec: specOf(opts) });
  emit({ step: 'created', ...describe(reply.vm) });
  return reply.vm;
}

async function stopAndDelete(vms, vm, timeout) {
  const stopped = await unary(vms, 'StopVm', { vm: vm.id });
  emit({ step: 'stopped', operation: stopped.operation.id, ...describe(stopped.vm) });
  if (stopped.vm.status.state !== 'STATE_DOWN') {
    await waitFor(vms, vm.id, 'STATE_DOWN', timeout);
  }
  await unary(vms, 'DeleteVm', { vm: vm.id });
  emit({ step: 'deleted', id: vm.id, name: vm.name });
}

async function run(vms, opts) {
  const vm = await create(vms, opts);
  try {
    const started = await unary(vms, 'StartVm', { vm: vm.id });
    emit({ step: 'started', operation: started.operation.id, ...describe(started.vm) });
    const up = await waitFor(vms, vm.id, 'STATE_UP', opts.timeout);
    const guest = up.status.guest || {};
    emit({ step: 'up', ...describe(up), guest_hostname: guest.hostname || '' });
  } catch (err) {
    await stopAndDelete(vms, vm, opts.timeout).catch(() => undefined);
    throw err;
  }
  await stopAndDelete(vms, vm, opts.timeout);
}

async function main() {
  const { values: opts, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      name: { type: 'string', default: 'node-client' },
      kernel: { type: 'string', default: '' },
      initrd: { type: 'string', default: '' },
      cmdline: { type: 'string', default: '' },
      'memory-mib': { type: 'string', default: '256' },
      timeout: { type: 'string', default: '120' },
    },
  });
  opts.timeout = Number(opts.timeout);
  const commands = { list, create, run };
  const command = commands[positionals[0] || 'run'];
  if (!command) {
    throw new Error(`unknown command ${positionals[0]}: list, create or run`);
  }
  const vms = connect(loadApi());
  try {
    await command(vms, opts);
  } finally {
    vms.close();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    if (err instanceof StepError) {
      const code = Object.keys(grpc.status).find((name) => grpc.status[name] === err.code);
      emit({ step: err.step, error: code || String(err.code), details: err.details });
    } else {
      emit({ step: 'client', error: 'CLIENT', details: err.message });
    }
    process.exit(1);
  },
);
