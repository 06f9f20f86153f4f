// Text and Graphviz forms of a graph, and a parser for the text form (so pass tests can be
// "IR text in, IR text out"). The text form is stable: values are renumbered %0, %1, ... in
// schedule order, graph inputs and parameters keep their names, attributes are sorted by key,
// and every value carries its type.
//
//   graph flagship(%x: f32[32,32,16,32,32]) {
//     %w = param "conv_transpose.weight" : f32[32,64,4,4,4]
//     %0 = conv_transpose3d(%x, %w, %b) {output_padding=[0,0,0], padding=[1,1,1], stride=[2,2,2]} : f32[...]
//     %1, %2, %3 = layer_norm(%0, %g, %beta) {eps=1e-05, normalized_shape=[64]} : f32[...], f32[...], f32[...]
//     return %4
//   }
#pragma once
#include <memory>
#include <string>

#include "graph/graph.h"

namespace minidl {

std::string to_text(const Graph& g);
std::string to_dot(const Graph& g);
// Parses the text form; re-runs every shape rule and checks it against the written types.
// Throws minidl::Error with the line number on malformed text.
std::unique_ptr<Graph> parse_text(const std::string& text);

// Writes <dir>/<NN>-<stage>.txt and .dot (creating dir). Used by the pass manager when a dump
// folder is set (API or the MINIDL_DUMP_DIR environment variable).
void dump_graph_to_dir(const Graph& g, const std::string& dir, const std::string& stage);

}  // namespace minidl
