/**
 * Imports a Node built-in (Node, Deno and Bun all have them) at run time. The specifier is
 * computed, so bundlers for the browser and for Cloudflare Workers neither resolve nor include
 * it: those bundles hold no Node built-in, and these paths (reading a file: URL, starting
 * worker_threads) are only taken where the built-ins exist.
 */
export function importNodeBuiltin<T>(name: string): Promise<T> {
  const specifier = `node:${name}`;
  return import(/* webpackIgnore: true */ /* @vite-ignore */ specifier) as Promise<T>;
}
