// The order checker for one side of a session.
import type { NodeRole } from "./messages.ts";
import { PrimarySessionOrder } from "./primary-order.ts";
import type { SessionOrder } from "./session-order.ts";
import { SecondarySessionOrder } from "./secondary-order.ts";

/** What `role` checks of its peer's input. */
export function sessionOrderFor(role: NodeRole): SessionOrder {
  return role === "primary" ? new PrimarySessionOrder() : new SecondarySessionOrder();
}
