/**
 * The project's dependency arrows, checked by `npm run depcheck` (part of `npm test`):
 * contracts know no implementation, the pure core knows nothing of the rest.
 *
 *   cli -> replay, trace, layers, services, domain, cuda
 *   replay -> trace, layers, services, domain
 *   layers -> services, domain, cuda
 *   services -> domain            (contracts: only domain and effect)
 *   trace -> domain
 *   cuda -> domain (errors, units, ports), never a policy or an allocator
 *   domain -> nothing of the project outside domain
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "domain-is-pure",
      comment: "src/domain imports nothing of the project outside itself (pure policies, plans, types)",
      severity: "error",
      from: { path: "^src/domain/" },
      to: { path: "^src/", pathNot: "^src/domain/" }
    },
    {
      name: "services-are-contracts",
      comment: "src/services imports only domain, other services and npm packages (effect): contracts know no implementation",
      severity: "error",
      from: { path: "^src/services/" },
      to: { path: "^src/", pathNot: "^src/(domain|services)/" }
    },
    {
      name: "only-cuda-touches-koffi",
      comment: "koffi (the FFI) is imported by src/cuda alone",
      severity: "error",
      from: { path: "^src/", pathNot: "^src/cuda/" },
      to: { path: "node_modules/koffi/" }
    },
    {
      name: "cuda-knows-no-allocator",
      comment: "src/cuda binds the driver; it knows no policy, allocator, adaptor, service or layer",
      severity: "error",
      from: { path: "^src/cuda/" },
      to: { path: "^src/(domain/(policies|adaptors)/|domain/Allocator\\.ts|services/|layers/|replay/|trace/|cli/)" }
    },
    {
      name: "trace-is-data",
      comment: "src/trace (codec, files, synthetic traces) depends on domain only",
      severity: "error",
      from: { path: "^src/trace/" },
      to: { path: "^src/", pathNot: "^src/(domain|trace)/" }
    },
    {
      name: "layers-below-cli",
      comment: "layers, replay and services never import the command line",
      severity: "error",
      from: { path: "^src/(layers|replay|services|domain|trace|cuda)/" },
      to: { path: "^src/cli/" }
    },
    {
      name: "replay-above-layers",
      comment: "the replay engine is used by cli and bench; layers do not import it",
      severity: "error",
      from: { path: "^src/(layers|services|domain|trace|cuda)/" },
      to: { path: "^src/replay/" }
    },
    {
      name: "no-cycles-in-domain",
      comment: "the pure core's modules form no import cycle",
      severity: "error",
      from: { path: "^src/domain/" },
      to: { circular: true }
    },
    {
      name: "not-to-unresolvable",
      comment: "every import resolves",
      severity: "error",
      from: {},
      to: { couldNotResolve: true }
    }
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    parser: "swc",
    exclude: { path: "^(dist|node_modules)/" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".js", ".mjs", ".cjs", ".d.ts"]
    }
  }
}
