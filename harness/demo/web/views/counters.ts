// The counters table: per live node, its state and the totals its engine counted.
import type { MetricsSnapshot } from "../engine-adapter.ts";
import type { LinkStats } from "../../../../replication/transport/message-port.ts";
import { CHART_CATEGORIES, formatBytes } from "./traffic-chart.ts";

export interface CounterRow {
  name: string;
  snapshot: MetricsSnapshot;
  link: LinkStats | undefined;
}

export function renderCounters(body: HTMLElement, rows: CounterRow[]): void {
  body.replaceChildren(
    ...rows.map(({ name, snapshot: s, link }) => {
      const row = document.createElement("tr");
      row.dataset["node"] = name;
      const timing =
        s.role === "primary"
          ? `${s.pauseMs.meanMs.toFixed(1)} / ${s.roundTripMs.meanMs.toFixed(1)}`
          : s.failoverMs !== undefined
            ? `takeover ${s.failoverMs.toFixed(0)} ms`
            : "";
      const cells = [
        name,
        `${s.role} ${s.state}`,
        String(s.epoch),
        String(s.syncs),
        ...CHART_CATEGORIES.map((category) => formatBytes(s.bytes[category])),
        timing,
        String(link?.ownStalls ?? 0),
      ];
      row.append(
        ...cells.map((text) => {
          const cell = document.createElement("td");
          cell.textContent = text;
          return cell;
        }),
      );
      return row;
    }),
  );
}
