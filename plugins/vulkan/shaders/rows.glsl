// plugins/vulkan/shaders/rows.glsl — one subgroup per row: the row index of
// this subgroup and the stride to the next (grid-stride), lanes walk the
// columns. Reductions are subgroup operations: no shared memory and no
// barriers (a barrier is a coroutine switch per subgroup on lavapipe).
uint row_first() { return gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID; }
uint row_step() { return gl_NumWorkGroups.x * gl_NumSubgroups; }
#define LANE gl_SubgroupInvocationID
#define LANES gl_SubgroupSize
