//go:build tools

// Package tools exists only so that go.mod/go.sum pin FerretDB and every module it needs.
// launcher/ferretdb.py vendors this module, adds FerretDB's generated build/version/version.txt
// to the vendored copy and builds github.com/FerretDB/FerretDB/cmd/ferretdb from it.
package tools

import _ "github.com/FerretDB/FerretDB/cmd/ferretdb"
