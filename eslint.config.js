// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      '**/dist/**',
      '**/node_modules/**',
      'packages/api/src/generated/**',
      '.hyperfarm/**',
      'coverage/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        setImmediate: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // The sans-I/O cores take time and randomness from their callers.
    files: [
      'packages/raft/src/core/**/*.ts',
      'packages/agent/src/engine/**/*.ts',
      'packages/agent/src/network/**/*.ts',
      'packages/daemon/src/{fsm,scheduler,controllers}/**/*.ts',
      // The farm simulator replays a seed exactly: its only clock is the virtual one.
      'packages/sim/src/**/*.ts',
    ],
    ignores: ['packages/agent/src/network/edge/**'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'Math', property: 'random', message: 'use the injected seeded generator' },
        { object: 'Date', property: 'now', message: 'use the injected clock' },
      ],
      'no-restricted-globals': ['error', 'setTimeout', 'setInterval'],
    },
  },
  {
    // raft → api is allowed at Raft's edges only (the gRPC transport and RaftNode speak
    // RaftService and map errors to statuses); the core, storage, simulator and checker stay
    // free of gRPC. See docs/architecture.md.
    files: ['packages/raft/src/{core,storage,sim,checker}/**/*.ts', 'packages/raft/src/types.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@hyperfarm/*', '@grpc/*'], message: "only raft's transport/ and node/ may use gRPC" },
            { group: ['**/transport/*', '**/node/*'], message: 'the core layers do not depend on the edges' },
          ],
        },
      ],
    },
  },
  {
    // The daemon's cores (farm state machine, scheduler, controllers) are pure: they take the
    // state and return results or actions; I/O and gRPC live in edge/ (docs/daemon.md).
    files: ['packages/daemon/src/{fsm,scheduler,controllers}/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { group: ['@grpc/*', 'node:*'], message: "the daemon's cores do no I/O" },
            {
              group: ['@hyperfarm/raft'],
              allowTypeImports: true,
              message: 'the cores only meet Raft as a type',
            },
            {
              group: ['**/edge/*', '../server.js', '../config.js'],
              message: 'the cores do not depend on the edges',
            },
          ],
        },
      ],
    },
  },
);
