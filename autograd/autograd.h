// Reverse-mode differentiation as a graph transform. Given outputs of a forward graph and a seed
// gradient for each (nullptr: the output must be a scalar and the seed is 1), it appends to the
// same graph the nodes computing d(outputs)/d(wrt) by walking the forward nodes in reverse
// schedule order and calling each op's gradient rule; gradients reaching one value from several
// users are summed with add nodes. Returns one Value per entry of wrt (nullptr when no path).
// An op on the path without a gradient rule throws, naming the op and the value.
#pragma once
#include <vector>

#include "graph/graph.h"

namespace minidl {

std::vector<Value*> append_backward(Graph& g, const std::vector<Value*>& outputs,
                                    const std::vector<Value*>& seeds,
                                    const std::vector<Value*>& wrt);

}  // namespace minidl
