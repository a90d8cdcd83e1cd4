// Browser adapter: images fetched over HTTP (the demo page serves them beside itself).
import type { ImageSource } from "../config.ts";

export interface FetchImageOptions {
  /** The file is gzip-compressed on the server: inflate it after download. */
  gunzip?: boolean;
  /** Called as bytes arrive (compressed bytes when `gunzip`), for a progress display. */
  onProgress?: (receivedBytes: number, totalBytes: number | undefined) => void;
}

/** An image fetched from `url` when the machine needs it; an HTTP or network failure names the URL's status. */
export function fetchImage(url: string, options: FetchImageOptions = {}): ImageSource {
  return {
    location: url,
    async load() {
      let response: Response;
      try {
        response = await fetch(url);
      } catch (error) {
        throw new Error(`download failed: ${(error as Error).message}`, { cause: error });
      }
      if (!response.ok || response.body === null) throw new Error(`download failed: HTTP ${response.status} ${response.statusText}`.trim());
      const length = Number(response.headers.get("content-length") ?? Number.NaN);
      const total = Number.isFinite(length) ? length : undefined;
      let received = 0;
      let body: ReadableStream<Uint8Array> = response.body.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            received += chunk.length;
            options.onProgress?.(received, total);
            controller.enqueue(chunk);
          },
        }),
      );
      if (options.gunzip === true) body = body.pipeThrough(new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>);
      try {
        return new Uint8Array(await new Response(body).arrayBuffer());
      } catch (error) {
        throw new Error(`download or decompression failed: ${(error as Error).message}`, { cause: error });
      }
    },
  };
}
