// Option parsing shared by the subcommands: node:util parseArgs in strict mode,
// with errors that name the option or file at fault. A UsageError exits 2 (the
// command line is wrong); a CliError exits 1 (the command line is fine but the
// world is not: a missing file, a node that is not running).
import { statSync } from "node:fs";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { MEMORY_MIB_RANGE } from "../../emulator/config.ts";
import { SECTOR_SIZE } from "../../emulator/units.ts";

export class UsageError extends Error {
  override name = "UsageError";
}

export class CliError extends Error {
  override name = "CliError";
}

export interface Subcommand {
  name: string;
  summary: string;
  usage: string;
  run(argv: string[]): Promise<number>;
}

type OptionsConfig = NonNullable<ParseArgsConfig["options"]>;

/** What parseOptions returns: parseArgs' values for these options (named, so that declarations can be emitted). */
export type OptionValues<O extends OptionsConfig> = ReturnType<
  typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: false }>
>["values"];

/** Strict parseArgs without positionals; unknown or malformed options become UsageErrors. */
export function parseOptions<const O extends OptionsConfig>(argv: string[], options: O): OptionValues<O> {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** Like parseOptions, with operands (what follows the options, or `--`) returned too. */
export function parseOptionsAndOperands<const O extends OptionsConfig>(argv: string[], options: O): { values: OptionValues<O>; operands: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, strict: true, allowPositionals: true });
    return { values: values, operands: positionals };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

export function parseMemory(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const mib = Number(value);
  if (!Number.isInteger(mib) || mib < MEMORY_MIB_RANGE.min || mib > MEMORY_MIB_RANGE.max) {
    throw new UsageError(`--memory: expected a whole number of MiB from ${MEMORY_MIB_RANGE.min} to ${MEMORY_MIB_RANGE.max}, got ${JSON.stringify(value)}`);
  }
  return mib;
}

const SIZE_UNITS: Record<string, number> = { "": 1, k: 1 << 10, m: 1 << 20, g: 1 << 30 };

/** "64M", "1G", "4096k" or a byte count; whole multiples of 512 (a sector). */
export function parseSize(option: string, value: string): number {
  const match = /^(\d+)([kmg]?)(i?b)?$/i.exec(value.trim());
  const bytes = match ? Number(match[1]) * SIZE_UNITS[match[2]!.toLowerCase()]! : NaN;
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % SECTOR_SIZE !== 0) {
    throw new UsageError(`${option}: expected a size such as 64M or 1G (a positive multiple of ${SECTOR_SIZE} bytes), got ${JSON.stringify(value)}`);
  }
  return bytes;
}

/** A whole number of milliseconds from 1 to `max`. */
export function parseMilliseconds(option: string, value: string | undefined, max: number): number | undefined {
  if (value === undefined) return undefined;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 1 || ms > max)
    throw new UsageError(`${option}: expected a whole number of milliseconds from 1 to ${max}, got ${JSON.stringify(value)}`);
  return ms;
}

export function parseChoice<const C extends string>(option: string, value: string | undefined, choices: readonly C[], fallback: C): C {
  if (value === undefined) return fallback;
  if (!(choices as readonly string[]).includes(value)) throw new UsageError(`${option}: expected one of ${choices.join(", ")}, got ${JSON.stringify(value)}`);
  return value as C;
}

export function parsePort(option: string, value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`${option}: expected a port from 0 to 65535, got ${JSON.stringify(value)}`);
  return port;
}

/** "[host:]port"; an IPv6 host goes in brackets ("[::1]:9000"). */
export function parseHostPort(option: string, value: string, defaultHost: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]:|([^:]+):)?(\d+)$/.exec(value);
  if (!match) throw new UsageError(`${option}: expected [host:]port, got ${JSON.stringify(value)}`);
  return { host: match[1] ?? match[2] ?? defaultHost, port: parsePort(option, match[3]!) };
}

export function parseWsUrl(option: string, value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`${option}: expected ws://host:port, got ${JSON.stringify(value)}`);
  }
  // wss:// reaches a secondary behind a TLS terminator (the records inside are encrypted and authenticated either way).
  const valid = (url.protocol === "ws:" && url.port !== "") || url.protocol === "wss:";
  if (!valid) throw new UsageError(`${option}: expected ws://host:port or wss://host[:port], got ${JSON.stringify(value)}`);
  return value;
}

/** An existing regular file, or a CliError that names it and says what it was for. */
export function existingFile(what: string, path: string): string {
  let isFile: boolean;
  try {
    isFile = statSync(path).isFile();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CliError(`${what} ${path}: ${code === "ENOENT" ? "no such file" : code === "EACCES" ? "permission denied" : (error as Error).message}`);
  }
  if (!isFile) throw new CliError(`${what} ${path}: not a regular file`);
  return path;
}

export function requireOption<T>(option: string, value: T | undefined, why = "is required"): T {
  if (value === undefined) throw new UsageError(`${option} ${why}`);
  return value;
}
