/**
 * A load generator in its own process, so the client's TLS and HTTP work does
 * not share the proxy's event loop: argv[2] (JSON) says what to GET, how many
 * loops and for how long; it prints the latencies of 200 answers as JSON.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

export interface LoadSpec {
  tls: boolean;
  host: string;
  port: number;
  path: string;
  headers: Record<string, string>;
  servername?: string;
  ca?: string;
  seconds: number;
  concurrency: number;
}

const spec = JSON.parse(process.argv[2] as string) as LoadSpec;
const agent = spec.tls
  ? new HttpsAgent({
      keepAlive: true,
      maxSockets: spec.concurrency,
      ...(spec.ca ? { ca: spec.ca } : {}),
      ...(spec.servername ? { servername: spec.servername } : {}),
    })
  : new HttpAgent({ keepAlive: true, maxSockets: spec.concurrency });
const send = spec.tls ? httpsRequest : httpRequest;

function once(): Promise<number> {
  return new Promise((resolve) => {
    send({ host: spec.host, port: spec.port, path: spec.path, headers: spec.headers, agent }, (res: IncomingMessage) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    })
      .on('error', () => resolve(0))
      .end();
  });
}

const latencies: number[] = [];
let errors = 0;
const t0 = performance.now();
const end = t0 + spec.seconds * 1000;
await Promise.all(
  Array.from({ length: spec.concurrency }, async () => {
    while (performance.now() < end) {
      const t = performance.now();
      if ((await once()) === 200) latencies.push(performance.now() - t);
      else errors++;
    }
  }),
);
agent.destroy();
process.stdout.write(JSON.stringify({ latencies, errors, seconds: (performance.now() - t0) / 1000 }));
