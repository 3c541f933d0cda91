// Where the workspace database lives when nobody says: $XDG_DATA_HOME/ganpo-workbench/
// workspace.sqlite, or ~/.local/share/ganpo-workbench/workspace.sqlite when XDG_DATA_HOME is
// unset (the XDG base-directory rule). The CLI and the GUI both use this default.
#pragma once

#include <string>

namespace ganpo {

std::string default_workspace_path();

}  // namespace ganpo
