// The guest's NIC as the host sees it: frames in and out, counters, and frame limits.
export { NetworkPort, type ReceiveOutcome, type TransmitListener } from "./port.ts";
export { NetworkMetrics, type NetworkMetricsSnapshot, type ReceiveDropReason, type TransmitDropReason } from "./metrics.ts";
export { DEFAULT_MAC, ETHERNET_HEADER_BYTES, MAX_FRAME_BYTES, NETWORK_MTU, formatMac, parseMac } from "./frame.ts";
