// Consistency points: operations that read or replace a machine's RAM and CPU state
// together must all see the guest at one instruction boundary, i.e. with the CPU stopped.
import { MachineStateError } from "./errors.ts";
import type { Machine } from "./machine.ts";

/** Throws unless the CPU is stopped (paused after `await pause()`, or blank) and will stay so until the caller yields. */
export function requireStopped(machine: Machine, operation: string): void {
  const { state } = machine;
  if ((state !== "paused" && state !== "blank") || machine.emulator.isRunning) {
    throw new MachineStateError(`${operation}: machine is ${state}${state === "paused" ? " but its CPU has not stopped yet" : ""}; await machine.pause() first`);
  }
}

/**
 * Pauses the machine, runs `body` synchronously at one instruction boundary, and resumes
 * it if it was running. Everything `body` reads (pages, CPU state) belongs to one moment.
 */
export async function whilePaused<T>(machine: Machine, body: () => T): Promise<T> {
  const wasRunning = machine.state === "running";
  await machine.pause();
  try {
    return body();
  } finally {
    if (wasRunning) machine.run();
  }
}
