#!/usr/bin/env node
// Launcher for the `twinvm` command: registers tsx's ESM loader in this process
// and runs the TypeScript entry point, so no build step is needed.
import { register } from "tsx/esm/api";

register();
await import("../twinvm.ts");
