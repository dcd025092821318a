// Preloaded into the Portkey gateway by bench/run.py (`node --require`): the benchmark must
// never depend on the network, and a gateway that phones home (telemetry, remote config,
// guardrail or pricing look-ups) would hang or fail there. Every TCP connect and DNS look-up
// to anything but loopback is refused at once and reported on stderr with the marker below;
// bench/run.py fails the run when the marker appears in the gateway's log.
"use strict";
const net = require("net");
const dns = require("dns");

const MARKER = "tollgate-bench-guard: refused outbound";

function loopback(host) {
  if (host === undefined || host === null || host === "") return true; // Node's default: localhost
  const h = String(host).toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || h.startsWith("127.") || h === "::ffff:127.0.0.1";
}

function report(what) {
  process.stderr.write(`${MARKER} ${what}\n`);
}

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  let opts = args[0];
  if (Array.isArray(opts)) opts = opts[0]; // internal normalized form
  let host;
  let port;
  if (opts && typeof opts === "object") {
    if (opts.path) return connect.apply(this, args); // Unix socket: local by construction
    host = opts.host;
    port = opts.port;
  } else {
    port = args[0];
    host = typeof args[1] === "string" ? args[1] : undefined;
  }
  if (!loopback(host)) {
    report(`connect ${host}:${port}`);
    const err = new Error(`outbound connection to ${host}:${port} refused by the benchmark`);
    err.code = "ECONNREFUSED";
    process.nextTick(() => this.destroy(err));
    return this;
  }
  return connect.apply(this, args);
};

function guardLookup(orig) {
  return function (hostname, ...rest) {
    if (!loopback(hostname)) {
      report(`dns ${hostname}`);
      const cb = rest[rest.length - 1];
      const err = new Error(`DNS look-up of ${hostname} refused by the benchmark`);
      err.code = "ENOTFOUND";
      if (typeof cb === "function") {
        process.nextTick(() => cb(err));
        return undefined;
      }
      return Promise.reject(err);
    }
    return orig.call(this, hostname, ...rest);
  };
}

dns.lookup = guardLookup(dns.lookup);
dns.promises.lookup = guardLookup(dns.promises.lookup);

module.exports = { MARKER };
