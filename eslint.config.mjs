// ESLint (flat config) with typescript-eslint's type-aware rules: a promise nobody awaits or
// catches (no-floating-promises) or an async function where a callback's result is ignored
// (no-misused-promises) loses errors silently, which a deploy tool cannot afford.
import eslint from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bench/**', 'scripts/**', 'testbed/**', '*.js', '*.mjs'] },
  eslint.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['src/**/*.ts', '__tests__/**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }]
    }
  },
  {
    // A function that does not fit on a screen is two functions.
    files: ['src/**/*.ts'],
    rules: { 'max-lines-per-function': ['error', { max: 60, skipBlankLines: true, skipComments: true }] }
  },
  {
    // Plain log lines go through log/untrusted.ts (info, printUntrusted), which neutralises text
    // from elsewhere: core.info and stdout write it as it is, and a \r in it could start a command.
    files: ['src/**/*.ts'],
    ignores: ['src/log/untrusted.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'core', property: 'info', message: 'Use info() from log/untrusted.ts (it neutralises foreign text).' },
        { object: 'process', property: 'stdout', message: 'Write through log/untrusted.ts.' },
        { object: 'console', property: 'log', message: 'Use info() from log/untrusted.ts.' }
      ]
    }
  },
  {
    files: ['__tests__/**/*.ts'],
    rules: { '@typescript-eslint/no-require-imports': 'off', '@typescript-eslint/no-explicit-any': 'off' }
  }
)
