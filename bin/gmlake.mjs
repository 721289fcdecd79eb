#!/usr/bin/env node
// The package's executable: runs the TypeScript entry point on the project's own Node (>= 22.18
// strips types natively; `npx gmlake` puts node_modules/.bin, with that Node, first on PATH).
import "../src/bin.ts"
