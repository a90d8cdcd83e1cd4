// The memory model: dirty-page tracking and page transfer between machines.
export {
  DirtyPageTracker,
  copyPageChanges,
  type PageChanges,
  type PageChangeViews,
  type TrackerOptions,
  type TrackerStats,
  type TrackingMode,
} from "./dirty-page-tracker.ts";
export { applyPages, type PageSet } from "./pages.ts";
export { simdAvailable, type ScanEngine } from "./page-scanner.ts";
