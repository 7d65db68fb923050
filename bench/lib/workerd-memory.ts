// Memory of the Worker that `wrangler dev` runs, for the soak: the resident memory of the workerd processes this
// run started (the runtime with everything in it — the Durable Objects' SQLite databases, caches, buffers), and the
// V8 heap of the Worker's isolate, the part Cloudflare limits per isolate (128 MB). The heap is read from workerd's
// own inspector (Chrome DevTools Protocol, `Runtime.getHeapUsage`); wrangler starts workerd with the inspector on
// a port of its choosing, so the port is found among the sockets the workerd processes listen on.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { descendants } from "../../scripts/lib/processes.ts";

/** The workerd processes started by this process (wrangler dev runs the Worker and its proxies in workerd). */
function workerdPids(): number[] {
  return descendants(process.pid).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "workerd";
    } catch {
      return false; // exited meanwhile
    }
  });
}

/** Resident memory, in MiB, of the workerd processes this run started (not other local stacks on the machine). */
export function workerdRssMiB(): number {
  let kib = 0;
  for (const pid of workerdPids()) {
    try {
      kib += Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
    } catch {
      // exited meanwhile
    }
  }
  return Math.round((kib / 1024) * 10) / 10;
}

/** TCP ports a process listens on (its socket inodes matched against its network namespace's LISTEN sockets). */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
        if (inode) inodes.add(inode);
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    return [];
  }
  const ports: number[] = [];
  for (const table of ["tcp", "tcp6"]) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/);
      const inode = f[9];
      if (f[3] === "0A" && inode !== undefined && inodes.has(inode)) {
        ports.push(Number.parseInt(f[1]?.split(":")[1] ?? "", 16));
      }
    }
  }
  return ports;
}

interface InspectorTarget {
  id: string;
  webSocketDebuggerUrl: string;
}

let debuggerUrl: string | undefined;

/** The DevTools WebSocket of the Worker's isolate (`core:user:<name>`), found once per run. */
async function findWorkerInspector(workerName: string): Promise<string | undefined> {
  for (const pid of workerdPids()) {
    for (const port of listeningPorts(pid)) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/json/list`, { signal: AbortSignal.timeout(1000) });
        if (!res.ok) {
          await res.body?.cancel();
          continue;
        }
        const targets = (await res.json()) as InspectorTarget[];
        const target = Array.isArray(targets) ? targets.find((t) => t.id === `core:user:${workerName}`) : undefined;
        if (target) return target.webSocketDebuggerUrl;
      } catch {
        // not an inspector (the Worker's own port answers JSON errors, others no HTTP at all)
      }
    }
  }
  return undefined;
}

export interface IsolateHeap {
  usedMiB: number;
  totalMiB: number;
}

/**
 * The V8 heap of the Worker's isolate (the Worker and its Durable Objects share it under workerd), or null when the
 * inspector cannot be reached. One sample, garbage included: workerd's inspector does not run a collection on
 * request (`HeapProfiler.collectGarbage` gets no answer), so `HeapSampler` takes many.
 */
export async function isolateHeap(workerName = "lastmile"): Promise<IsolateHeap | null> {
  // A second try finds the inspector again when the Worker restarted or was not listening yet.
  return (await heapOnce(workerName)) ?? (await heapOnce(workerName));
}

async function heapOnce(workerName: string): Promise<IsolateHeap | null> {
  debuggerUrl ??= await findWorkerInspector(workerName);
  const url = debuggerUrl;
  if (!url) return null;
  const usage = await new Promise<{ usedSize: number; totalSize: number } | null>((resolve) => {
    const ws = new WebSocket(url);
    const done = (value: { usedSize: number; totalSize: number } | null) => {
      clearTimeout(timer);
      ws.close();
      resolve(value);
    };
    const timer = setTimeout(() => done(null), 5000);
    ws.onopen = () => ws.send(JSON.stringify({ id: 1, method: "Runtime.getHeapUsage" }));
    ws.onmessage = (message) => {
      const data = JSON.parse(String(message.data)) as {
        id?: number;
        result?: { usedSize: number; totalSize: number };
      };
      if (data.id === 1) done(data.result ?? null);
    };
    ws.onerror = () => done(null);
  });
  if (!usage) {
    debuggerUrl = undefined; // the Worker may have restarted: look again next time
    return null;
  }
  const mib = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;
  return { usedMiB: mib(usage.usedSize), totalMiB: mib(usage.totalSize) };
}

export interface HeapWindow {
  samples: number;
  /** The lowest used size sampled: the live heap just after a collection, the figure whose growth would be a leak. */
  minUsedMiB: number | null;
  maxUsedMiB: number | null;
  maxTotalMiB: number | null;
}

/** Samples the isolate's heap every `intervalMs` between start() and stop(). */
export class HeapSampler {
  #heaps: IsolateHeap[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;
  #pending: Promise<unknown> = Promise.resolve();

  start(intervalMs = 2000): void {
    const heaps: IsolateHeap[] = [];
    this.#heaps = heaps;
    this.#timer = setInterval(() => {
      this.#pending = isolateHeap().then((heap) => heap && heaps.push(heap));
    }, intervalMs);
  }

  async stop(): Promise<HeapWindow> {
    clearInterval(this.#timer);
    await this.#pending;
    const heaps = this.#heaps;
    const pick = (f: (h: IsolateHeap) => number, agg: (...xs: number[]) => number) =>
      heaps.length > 0 ? agg(...heaps.map(f)) : null;
    return {
      samples: heaps.length,
      minUsedMiB: pick((h) => h.usedMiB, Math.min),
      maxUsedMiB: pick((h) => h.usedMiB, Math.max),
      maxTotalMiB: pick((h) => h.totalMiB, Math.max),
    };
  }
}
