/**
 * The simulated device as a `Driver` layer.
 *
 * @since 0.1.0
 */
import { Layer } from "effect"
import type { Driver } from "../../services/Driver.ts"
import { layerOver } from "../DriverLayer.ts"
import { SimDriver, type SimDriverOptions } from "./SimDriver.ts"

/**
 * A `Driver` over the given simulator instance. Keeping the instance outside the layer lets the
 * caller inspect its ledger after the session's scope has closed (leak checks).
 * @category layers
 */
export const layerSimWith = (sim: SimDriver): Layer.Layer<Driver> =>
  layerOver(sim, { kind: "sim", ordinal: 0, name: sim.name, granularity: sim.granularity, capacity: sim.capacity })

/** A `Driver` over a fresh simulated device. @category layers */
export const layerSim = (options: SimDriverOptions = {}): Layer.Layer<Driver> =>
  Layer.suspend(() => layerSimWith(new SimDriver(options)))
