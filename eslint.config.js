// ESLint for bugs, not style: formatting is Prettier's job, layering is dependency-cruiser's (.dependency-cruiser.cjs).
// Type-aware rules read the same tsconfig.json that `tsc --noEmit` checks.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'guest/', 'src/e2b/envd/gen/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // A promise nobody awaits loses its rejection (an unhandled rejection kills the daemon) and its ordering.
      // node:test's test()/describe() return promises that the runner itself tracks, so those calls are safe.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] }] },
      ],
      // A union member added later (a new state, a new step kind) must be handled by every switch over it;
      // a `default:` does not count as handling it, it is only there for values outside the type (untrusted input).
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: false }],
      // `_`-prefixed names are deliberately unused: a parameter an interface requires, a field dropped by a rest pattern.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
      // Rejecting with a caught `unknown` passes an error on, as `throw err` does; the rule is for strings and literals.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // `return promise` inside try/catch skips the catch and the finally's ordering; elsewhere it is a matter of taste.
      '@typescript-eslint/return-await': ['error', 'error-handling-correctness-only'],
      // [404, 1000].sort() is [1000, 404]: numbers need a comparator; strings sort as they should.
      '@typescript-eslint/require-array-sort-compare': ['error', { ignoreStringArrays: true }],
      '@typescript-eslint/no-deprecated': 'error',
      // `== null` is the one loose comparison that says what it means (null or undefined).
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'no-self-compare': 'error',
      'no-unmodified-loop-condition': 'error',
      'no-unreachable-loop': 'error',
      'array-callback-return': 'error',
      // A `let` that a closure reads before its one assignment cannot be a `const` (the closure would hit the TDZ).
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // Off: an async function without `await` is how a fake or a small implementation of a Promise-returning
      // interface is written, and `async` turns its throws into rejections, which callers rely on.
      '@typescript-eslint/require-await': 'off',
      // Off: the regexes that match control characters (\x00-\x1f) do so on purpose, to reject them in untrusted input.
      'no-control-regex': 'off',
    },
  },
  {
    // Plain JavaScript (bin/cella.js, this file, the dependency-cruiser config) is not in tsconfig.json.
    files: ['**/*.js', '**/*.cjs', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { ...tseslint.configs.disableTypeChecked.languageOptions, globals: globals.node },
  },
);
