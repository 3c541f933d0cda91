// A command line as the argument list it names, split the way a POSIX shell splits words and
// nothing more: no variables, globs, pipes, redirections or command lists. The external judge
// (core/eval/external_judge.h) runs the list with execvp, never through /bin/sh, so text in a
// data or model file can never become a command.
//
// Quoting: '...' keeps everything literally; "..." keeps everything, a backslash escaping only
// " \ $ and `; outside quotes a backslash keeps the next character; backslash-newline joins
// lines. An unquoted ; | & < > ( ) $ or ` is refused with a message that says to put the
// pipeline in a script, or to write sh -c '...' when a shell is really meant; so is a $ or `
// inside double quotes, which a shell would expand.
#pragma once

#include <string>
#include <vector>

namespace ganpo {

// Fills argv; returns "" on success, else what is wrong with the text.
inline std::string split_command_line(const std::string& text, std::vector<std::string>& argv) {
  argv.clear();
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) argv.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\'') {
      const size_t end = text.find('\'', i + 1);
      if (end == std::string::npos) return "the single quote at character " + std::to_string(i + 1) + " is not closed";
      word.append(text, i + 1, end - i - 1);
      i = end;
    } else if (c == '"') {
      size_t j = i + 1;
      for (; j < text.size() && text[j] != '"'; ++j) {
        if (text[j] == '\\' && j + 1 < text.size() && text[j + 1] == '\n') {  // a line continuation
          ++j;
          continue;
        }
        if (text[j] == '\\' && j + 1 < text.size() && std::string("\"\\$`").find(text[j + 1]) != std::string::npos)
          ++j;
        else if (text[j] == '$' || text[j] == '`')
          return std::string("'") + text[j] + "' at character " + std::to_string(j + 1) +
                 " would be expanded by a shell, and the command runs without one; write the value itself "
                 "(or \\" + text[j] + " for the character)";
        word += text[j];
      }
      if (j >= text.size()) return "the double quote at character " + std::to_string(i + 1) + " is not closed";
      i = j;
    } else if (c == '\\') {
      if (i + 1 >= text.size()) return "the command ends with a backslash";
      if (text[i + 1] == '\n') {  // a line continuation joins the lines
        ++i;
        in_word = !word.empty();
        continue;
      }
      word += text[++i];
    } else if (std::string(";|&<>()$`").find(c) != std::string::npos) {
      return std::string("'") + c + "' at character " + std::to_string(i + 1) +
             " would need a shell, and the command runs without one; put the pipeline in a script and "
             "name the script, or write sh -c '...' if a shell is what you mean";
    } else {
      word += c;
    }
  }
  if (in_word) argv.push_back(std::move(word));
  if (argv.empty()) return "the command is empty";
  return "";
}

}  // namespace ganpo
