package imagetranslation

import "testing"

func TestYAMLDocuments(t *testing.T) {
	tests := []struct {
		name string
		data string
		want int
	}{
		{"empty", "", 0},
		{"comments only", "# nothing\n\n", 0},
		{"one", "translations: []\n", 1},
		{"one with start marker", "# rules\n---\ntranslations: []\n", 1},
		{"one with start and end markers", "---\ntranslations: []\n---\n", 1},
		{"two", "a: 1\n---\nb: 2\n", 2},
		{"content on the marker line", "a: 1\n--- {b: 2}\n", 2},
		{"dashes inside a value", "a: ---x\nb: |\n  ---\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := yamlDocuments([]byte(tt.data)); got != tt.want {
				t.Errorf("yamlDocuments(%q) = %d, want %d", tt.data, got, tt.want)
			}
		})
	}
}
