export { createLab, destroyAllLabs, destroyLab, listLabNamespaces, Lab } from "./lab";
export type { LabHost, LabHostSpec, LabOptions } from "./lab";
export { assertNotRootNetfilter, labCommandLog, runLocal } from "./exec";
export type { LocalOptions, LocalResult } from "./exec";
export { DEFAULT_LAB_NAME, inventoryPath, labBaseDir, labDir, readInventory } from "./inventory";
export type { Inventory, InventoryHost } from "./inventory";
export { guardRoutesPresent, installGuardRoutes, LAB_IPV4_RANGE, LAB_IPV6_RANGE } from "./network";
