using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.IO;

namespace OnnxAlign.Cli;

/// <summary>
/// The one way the CLI writes JSON reports: indented, readable Unicode, atomically, and with finite-value discipline —
/// JSON has no NaN or ±∞, so such a figure is written as null and listed under <c>non_finite</c> with its path and
/// value, rather than failing the write after the samples are on disk.
/// </summary>
internal static class JsonFiles
{
    private static readonly JsonSerializerOptions Options = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static void Write(string path, JsonNode node)
    {
        var nonFinite = new List<(string Path, string Value)>();
        Sanitize(node, "$", nonFinite);
        if (nonFinite.Count > 0 && node is JsonObject obj)
            obj["non_finite"] = new JsonArray(nonFinite.Select(f => (JsonNode)new JsonObject
            {
                ["path"] = f.Path, ["value"] = f.Value, ["reason"] = "not a finite number (a degenerate estimate or a non-finite input); written as null",
            }).ToArray());
        AtomicFile.WriteText(path, node.ToJsonString(Options) + "\n");
    }

    private static void Sanitize(JsonNode? node, string path, List<(string, string)> found)
    {
        switch (node)
        {
            case JsonObject obj:
                foreach (var key in obj.Select(kv => kv.Key).ToList())
                {
                    var child = obj[key];
                    if (IsNonFinite(child, out string text)) { obj[key] = null; found.Add(($"{path}.{key}", text)); }
                    else Sanitize(child, $"{path}.{key}", found);
                }
                break;
            case JsonArray array:
                for (int i = 0; i < array.Count; i++)
                {
                    if (IsNonFinite(array[i], out string text)) { array[i] = null; found.Add(($"{path}[{i}]", text)); }
                    else Sanitize(array[i], $"{path}[{i}]", found);
                }
                break;
        }
    }

    private static bool IsNonFinite(JsonNode? node, out string text)
    {
        text = "";
        if (node is not JsonValue value) return false;
        if (value.TryGetValue<double>(out double d) && !double.IsFinite(d)) { text = d.ToString(System.Globalization.CultureInfo.InvariantCulture); return true; }
        if (value.TryGetValue<float>(out float f) && !float.IsFinite(f)) { text = f.ToString(System.Globalization.CultureInfo.InvariantCulture); return true; }
        return false;
    }
}
