// The layer map, written down once: `npm run lint:layers` fails on an import that goes up, sideways
// or around a folder's door. docs/design.md ("Map of the code") is the same table in words, and
// scripts/layers.test.ts keeps the two in step.
//
// Tiers, bottom first. A folder may import folders of LOWER tiers only (not its own tier's
// siblings), and only through their index.ts. A strict order of tiers leaves no room for cycles.
const TIERS = [
  ['contract'],
  ['host', 'logs', 'limits', 'capacity', 'tls', 'agent', 'vmm', 'archive', 'dockerfile', 'http', 'console'],
  ['net', 'disk', 'oci'],
  ['setup'],
  ['engine'],
  ['store'],
  ['auth', 'connectors'],
  ['lifecycle'],
  ['usage', 'images'],
  ['e2b'],
  ['proxy', 'shell'],
  ['api'],
  ['server'],
  ['client'],
  ['cli'],
];

const any = (names) => `(${names.join('|')})`;
const TEST = '\\.test\\.ts$';
const DOOR = '^src/[^/]+/index\\.ts$';

const tierRules = TIERS.map((folders, tier) => ({
  name: `tier-${tier}-imports-only-lower-tiers`,
  comment: `${folders.join(', ')} (tier ${tier}) may import only tiers 0-${tier - 1}: this is an upward or sideways import.`,
  severity: 'error',
  from: { path: `^src/${any(folders)}/` },
  to: { path: `^src/${any(TIERS.slice(tier).flat())}/`, pathNot: '^src/$1/' },
}));

module.exports = {
  forbidden: [
    {
      name: 'contract-imports-nothing-of-cella',
      comment: 'src/contract is the bottom layer: schemas, errors, names. It may import npm packages and node: modules only.',
      severity: 'error',
      from: { path: '^src/contract/' },
      to: { path: '^(src|test|bench|scripts)/', pathNot: '^src/contract/' },
    },
    {
      name: 'client-imports-only-contract',
      comment: "src/client is the package's public entry (package.json main): it must not pull in server code.",
      severity: 'error',
      from: { path: '^src/client/' },
      to: { path: '^src/', pathNot: '^src/(client|contract)/' },
    },
    ...tierRules,
    {
      name: 'through-the-door',
      comment: "Another folder is reached through its index.ts only; what the door does not export is that folder's own business.",
      severity: 'error',
      from: { path: '^src/([^/]+)/' },
      to: { path: '^src/', pathNot: ['^src/$1/', DOOR] },
    },
    {
      name: 'tests-and-tools-through-the-door',
      comment: "test/, bench/ and scripts/ use src/ the way its callers do: through each folder's index.ts.",
      severity: 'error',
      from: { path: '^(test|bench|scripts)/' },
      to: { path: '^src/', pathNot: DOOR },
    },
    {
      name: 'folder-not-in-the-map',
      comment: 'Every folder under src/ has a tier in .dependency-cruiser.cjs and a line in docs/design.md.',
      severity: 'error',
      from: { path: '^src/', pathNot: `^src/${any(TIERS.flat())}/` },
      to: {},
    },
    {
      name: 'src-not-to-tests-or-tools',
      comment: 'Shipped code never imports test/, bench/ or scripts/; unit tests may import test/fixtures/ only.',
      severity: 'error',
      from: { path: '^src/', pathNot: TEST },
      to: { path: '^(test|bench|scripts)/' },
    },
    {
      name: 'unit-tests-only-fixtures',
      comment: "A unit test may borrow test/fixtures/ (sockets, raw zips) but not the integration suites' harness.",
      severity: 'error',
      from: { path: `^src/.+${TEST}` },
      to: { path: '^(test|bench|scripts)/', pathNot: '^test/fixtures/' },
    },
    {
      // bench/ drives the same real server as the integration suites, so it shares their harness
      // (test/helpers.ts, test/control-helpers.ts, test/fixtures/) rather than keeping a copy of it.
      name: 'tests-not-to-bench-or-scripts',
      severity: 'error',
      from: { path: '^test/' },
      to: { path: '^(bench|scripts)/' },
    },
    {
      name: 'no-cycles',
      comment: 'A module cycle makes load order matter (an ES module sees its partner half-initialised).',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'shipped-code-not-to-dev-dependencies',
      comment: 'npm ci --omit=dev drops devDependencies: shipped code that needs one breaks only in production.',
      severity: 'error',
      from: { path: '^src/', pathNot: TEST },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'not-to-undeclared-packages',
      comment: 'A package missing from package.json works only while another package happens to install it.',
      severity: 'error',
      from: {},
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Type-only imports couple layers as much as value imports do.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
// For scripts/layers.test.ts; not enumerable, so dependency-cruiser's config check does not see it.
Object.defineProperty(module.exports, 'TIERS', { value: TIERS });
