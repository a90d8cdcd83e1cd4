// A virtio-blk disk's state as it rides in snapshots and state captures (JSON), and the
// schema a restore checks it against before anything is applied: a damaged or hostile
// state image is refused whole, with what is wrong, instead of half-restored.
import { Ajv, type JSONSchemaType } from "ajv";
import type { TransportState } from "../virtio/pci-transport.ts";

export interface DiskState {
  transport: TransportState;
  /** Head descriptors of the requests in flight at the capture (run again after a restore). */
  inFlight: number[];
}

const u32 = { type: "integer", minimum: 0, maximum: 0xffff_ffff } as const;
const u16 = { type: "integer", minimum: 0, maximum: 0xffff } as const;
/** Guest-physical addresses fit a JavaScript number (the ring addresses are 64-bit on the wire). */
const address = { type: "integer", minimum: 0, maximum: Number.MAX_SAFE_INTEGER } as const;

const DISK_STATE_SCHEMA: JSONSchemaType<DiskState> = {
  type: "object",
  required: ["transport", "inFlight"],
  properties: {
    transport: {
      type: "object",
      required: ["status", "deviceFeatureSelect", "driverFeatureSelect", "driverFeatures", "queueSelect", "isr", "configGeneration", "queues"],
      properties: {
        status: { type: "integer", minimum: 0, maximum: 0xff },
        deviceFeatureSelect: u32,
        driverFeatureSelect: u32,
        driverFeatures: { type: "string", pattern: "^[0-9a-f]{1,16}$" },
        queueSelect: u16,
        isr: { type: "integer", minimum: 0, maximum: 0xff },
        configGeneration: u32,
        queues: {
          type: "array",
          maxItems: 64,
          items: {
            type: "object",
            required: ["size", "descAddr", "availAddr", "usedAddr", "enabled", "lastAvailIdx", "nextUsedIdx", "signalledUsedIdx"],
            properties: {
              size: { type: "integer", minimum: 0, maximum: 32768 },
              descAddr: address,
              availAddr: address,
              usedAddr: address,
              enabled: { type: "boolean" },
              lastAvailIdx: u16,
              nextUsedIdx: u16,
              signalledUsedIdx: u16,
            },
          },
        },
      },
    },
    inFlight: { type: "array", maxItems: 32768, items: { type: "integer", minimum: 0, maximum: 32767 } },
  },
};

const validate = new Ajv({ allErrors: false, strict: true }).compile(DISK_STATE_SCHEMA);

/** The disk state, or what is wrong with it. */
export function checkDiskState(value: unknown): DiskState | string {
  if (validate(value)) return value;
  const error = validate.errors?.[0];
  return error === undefined ? "not a disk state" : `${error.instancePath || "the state"} ${error.message ?? "is invalid"}`;
}
