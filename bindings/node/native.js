'use strict';
// Finds the native addon: the file a local build left beside this one
// (codex-as-api.<platform>.node), else the per-platform package
// (@codex-as-api/<platform>), an optional dependency of codex-as-api that npm installs only
// on the platform its `os`/`cpu`/`libc` fields name. When it is absent the error says which
// package is missing and for which platform.

const fs = require('node:fs');
const path = require('node:path');

const SUPPORTED = [
  'darwin-arm64',
  'darwin-x64',
  'linux-arm64-gnu',
  'linux-arm64-musl',
  'linux-x64-gnu',
  'linux-x64-musl',
  'win32-arm64-msvc',
  'win32-x64-msvc',
];

function isMusl() {
  // glibc's runtime version is in the process report's header; musl has none.
  try {
    if (typeof process.report?.getReport === 'function') {
      process.report.excludeNetwork = true;
      const report = process.report.getReport();
      const header = typeof report === 'string' ? JSON.parse(report).header : report?.header;
      if (header) return !header.glibcVersionRuntime;
    }
  } catch {
    // fall through to ldd
  }
  try {
    return fs.readFileSync('/usr/bin/ldd', 'utf8').includes('musl');
  } catch {
    return false;
  }
}

/** The platform as the package names spell it: linux-x64-gnu, darwin-arm64, win32-x64-msvc. */
function platformId() {
  const { platform, arch } = process;
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

let cached;

/** The addon's exports; throws an Error naming the missing package when there is none. */
function load() {
  if (cached) return cached;
  const id = platformId();
  const local = path.join(__dirname, `codex-as-api.${id}.node`);
  if (fs.existsSync(local)) {
    cached = require(local);
    return cached;
  }
  const pkg = `@codex-as-api/${id}`;
  if (!SUPPORTED.includes(id)) {
    throw new Error(
      `codex-as-api: there is no prebuilt binary for this platform (${id}); ` +
        `prebuilt platforms: ${SUPPORTED.join(', ')}. ` +
        'Build it from source instead: cargo install codex-as-api',
    );
  }
  try {
    cached = require(pkg);
    return cached;
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND' && String(e.message).includes(pkg)) {
      const err = new Error(
        `codex-as-api: the package ${pkg} is missing. It holds the native binary for this ` +
          `platform (${id}) and is an optional dependency of codex-as-api, which npm skips ` +
          'with --omit=optional (or --no-optional), or when a lockfile was made on another ' +
          `platform. Install it: npm install ${pkg}@${require('./package.json').version}`,
      );
      err.code = 'CODEX_AS_API_BINARY_MISSING';
      err.packageName = pkg;
      err.platform = id;
      throw err;
    }
    const err = new Error(`codex-as-api: cannot load ${pkg} on ${id}: ${e && e.message}`);
    err.cause = e;
    throw err;
  }
}

module.exports = { load, platformId, SUPPORTED };
