using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace OnnxAlign.IO;

/// <summary>
/// The one serialiser of the library's typed report records (DESIGN §6: report.json as typed records): property names
/// in snake_case (<c>FreshStandardError</c> → <c>fresh_standard_error</c>), nulls written, and a non-finite number
/// written as null, since JSON has no NaN or ±∞ (a record says beside such a figure why it can be missing). It also
/// writes every JSON report file (<see cref="WriteFile"/>): indented, readable Unicode, atomically.
/// </summary>
public static class ReportJson
{
    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new FiniteDouble(), new FiniteFloat() },
    };

    private static readonly JsonSerializerOptions FileOptions = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>A record as the JSON node report.json holds, by its run-time type (a derived record writes its own fields).</summary>
    public static JsonNode ToNode(object value)
    {
        ArgumentNullException.ThrowIfNull(value);
        return JsonSerializer.SerializeToNode(value, value.GetType(), Options)!;
    }

    /// <summary>A record read back from the node <see cref="ToNode"/> made of it (null figures cannot be read back as numbers).</summary>
    /// <exception cref="JsonException">The node does not hold a <typeparamref name="T"/>.</exception>
    public static T FromNode<T>(JsonNode node) =>
        node.Deserialize<T>(Options) ?? throw new JsonException($"null where a {typeof(T).Name} was expected");

    /// <summary>
    /// Writes a JSON report to <paramref name="path"/> atomically, with finite-value discipline: JSON has no NaN or ±∞,
    /// so such a figure is written as null and listed under <c>non_finite</c> with its path and value, rather than
    /// failing the write after the samples are on disk.
    /// </summary>
    public static void WriteFile(string path, JsonNode node)
    {
        ArgumentNullException.ThrowIfNull(node);
        var nonFinite = new List<(string Path, string Value)>();
        Sanitize(node, "$", nonFinite);
        if (nonFinite.Count > 0 && node is JsonObject obj)
            obj["non_finite"] = new JsonArray(nonFinite.Select(f => (JsonNode)new JsonObject
            {
                ["path"] = f.Path, ["value"] = f.Value, ["reason"] = "not a finite number (a degenerate estimate or a non-finite input); written as null",
            }).ToArray());
        AtomicFile.WriteText(path, node.ToJsonString(FileOptions) + "\n");
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
        if (value.TryGetValue<double>(out double d) && !double.IsFinite(d)) { text = d.ToString(CultureInfo.InvariantCulture); return true; }
        if (value.TryGetValue<float>(out float f) && !float.IsFinite(f)) { text = f.ToString(CultureInfo.InvariantCulture); return true; }
        return false;
    }

    /// <summary>Finite doubles as numbers, NaN and ±∞ as null.</summary>
    private sealed class FiniteDouble : JsonConverter<double>
    {
        public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetDouble();

        public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options)
        {
            if (double.IsFinite(value)) writer.WriteNumberValue(value);
            else writer.WriteNullValue();
        }
    }

    private sealed class FiniteFloat : JsonConverter<float>
    {
        public override float Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetSingle();

        public override void Write(Utf8JsonWriter writer, float value, JsonSerializerOptions options)
        {
            if (float.IsFinite(value)) writer.WriteNumberValue(value);
            else writer.WriteNullValue();
        }
    }
}
