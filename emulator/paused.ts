// Consistency points: operations that read or replace a machine's RAM and CPU state
// together must all see the guest at one instruction boundary. In JavaScript that is any
// moment outside v86's main loop (or inside our boundary hook): the CPU need not be stopped.
import { MachineStateError } from "./errors.ts";
import type { Machine } from "./machine.ts";

/**
 * Throws unless the machine's CPU stands between two instructions now (and stays there until
 * the caller yields): not from a device handler, which runs inside the guest's instruction.
 */
export function requireBoundary(machine: Machine, operation: string): void {
  const { state } = machine;
  if (state === "created" || state === "destroyed") throw new MachineStateError(`${operation}: machine is ${state}`);
  if (!machine.emulator.atInstructionBoundary) {
    throw new MachineStateError(`${operation}: called inside a guest instruction (from a device handler); use machine.atNextBoundary()`);
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
