using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace OnnxAlign.IO;

/// <summary>
/// The one serialiser of the library's typed report records (DESIGN §6: report.json as typed records): property names
/// in snake_case (<c>FreshStandardError</c> → <c>fresh_standard_error</c>), nulls written, and a non-finite number
/// written as null, since JSON has no NaN or ±∞ (a record says beside such a figure why it can be missing).
/// </summary>
public static class ReportJson
{
    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Converters = { new FiniteDouble() },
    };

    /// <summary>A record as the JSON node report.json holds, by its run-time type (a derived record writes its own fields).</summary>
    public static JsonNode ToNode(object value)
    {
        ArgumentNullException.ThrowIfNull(value);
        return JsonSerializer.SerializeToNode(value, value.GetType(), Options)!;
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
}
