// Lint: ESLint's and typescript-eslint's recommended rules with type information
// (`npm run lint`; .ci/run runs it before the tests). Formatting is Prettier's job
// (`npm run format`), so no stylistic rules here.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "harness/demo/dist/", "tmp/", "images/"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ["*.js", "examples/*.mjs", "harness/bin/*.js"] }, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // `async` on a method with nothing to await is how an implementation of a promise-returning
      // interface turns a throw into a rejection (MemoryBackend.read, a fake's pause): keep it.
      "@typescript-eslint/require-await": "off",
      // `_` names a value left out on purpose (destructuring a field away, an unused callback argument).
      // Passing on what a catch caught, whatever it is, is not inventing a non-Error reason.
      "@typescript-eslint/prefer-promise-reject-errors": ["error", { allowThrowingUnknown: true }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", destructuredArrayIgnorePattern: "^_" }],
    },
  },
  {
    // The few plain JavaScript files (the CLI launcher, the packaged example, this file) run on Node.
    files: ["**/*.js", "**/*.mjs"],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { globals: { process: "readonly", console: "readonly", performance: "readonly", URL: "readonly" } },
  },
);
