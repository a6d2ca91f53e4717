using Google.Protobuf;

namespace OnnxAlign.ModelForge;

/// <summary>
/// A protobuf message written field by field, with the field numbers of onnx.proto (not vendored: the numbers are
/// the public, stable wire contract of ONNX). Enough of ModelProto/GraphProto/NodeProto/TensorProto for toy models.
/// </summary>
public sealed class ProtoMessage
{
    private readonly MemoryStream _buffer = new();
    private readonly CodedOutputStream _out;

    /// <summary>An empty message.</summary>
    public ProtoMessage() => _out = new CodedOutputStream(_buffer, leaveOpen: true);

    /// <summary>A varint field (int32/int64/enum).</summary>
    public ProtoMessage Int(int field, long value)
    {
        _out.WriteTag(field, WireFormat.WireType.Varint);
        _out.WriteInt64(value);
        return this;
    }

    /// <summary>A 32-bit float field.</summary>
    public ProtoMessage Float(int field, float value)
    {
        _out.WriteTag(field, WireFormat.WireType.Fixed32);
        _out.WriteFloat(value);
        return this;
    }

    /// <summary>A string field.</summary>
    public ProtoMessage String(int field, string value)
    {
        _out.WriteTag(field, WireFormat.WireType.LengthDelimited);
        _out.WriteString(value);
        return this;
    }

    /// <summary>A bytes field.</summary>
    public ProtoMessage Bytes(int field, byte[] value)
    {
        _out.WriteTag(field, WireFormat.WireType.LengthDelimited);
        _out.WriteBytes(ByteString.CopyFrom(value));
        return this;
    }

    /// <summary>An embedded message field.</summary>
    public ProtoMessage Message(int field, ProtoMessage value) => Bytes(field, value.ToArray());

    /// <summary>The encoded message.</summary>
    public byte[] ToArray()
    {
        _out.Flush();
        return _buffer.ToArray();
    }
}

/// <summary>Element types of onnx.proto's TensorProto.DataType.</summary>
public enum OnnxType
{
    /// <summary>FLOAT.</summary>
    Float = 1,
    /// <summary>INT32.</summary>
    Int32 = 6,
    /// <summary>INT64.</summary>
    Int64 = 7,
    /// <summary>FLOAT16.</summary>
    Float16 = 10,
}

/// <summary>Builds an ONNX graph node by node and serialises it as a ModelProto.</summary>
public sealed class OnnxGraph(string name)
{
    private readonly List<ProtoMessage> _nodes = [], _inputs = [], _outputs = [];
    private readonly List<(OnnxType Type, byte[] Raw, long[] Dims, string Name)> _initializers = [];
    private int _counter;

    /// <summary>Declares a graph input; a dimension of -1 becomes the symbolic dimension "batch", -2 "sequence", -3 "steps".</summary>
    public string Input(string inputName, OnnxType type, params long[] dims)
    {
        _inputs.Add(ValueInfo(inputName, type, dims));
        return inputName;
    }

    /// <summary>Declares a graph output.</summary>
    public void Output(string outputName, OnnxType type, params long[] dims) => _outputs.Add(ValueInfo(outputName, type, dims));

    /// <summary>A float constant tensor.</summary>
    public string Constant(float[] data, params long[] dims)
    {
        var raw = new byte[data.Length * 4];
        Buffer.BlockCopy(data, 0, raw, 0, raw.Length);
        return Initializer(OnnxType.Float, raw, dims);
    }

    /// <summary>An int64 constant tensor.</summary>
    public string Constant(long[] data, params long[] dims)
    {
        var raw = new byte[data.Length * 8];
        Buffer.BlockCopy(data, 0, raw, 0, raw.Length);
        return Initializer(OnnxType.Int64, raw, dims);
    }

    /// <summary>A float scalar constant.</summary>
    public string Scalar(float value) => Constant([value]);

    /// <summary>Adds a node; returns its (single) output name.</summary>
    public string Node(string opType, string[] inputs, Action<ProtoMessage>? attributes = null, string? output = null)
    {
        output ??= $"{opType.ToLowerInvariant()}_{_counter++}";
        var node = new ProtoMessage();
        foreach (var i in inputs) node.String(1, i);
        node.String(2, output).String(3, output).String(4, opType);
        attributes?.Invoke(node);
        _nodes.Add(node);
        return output;
    }

    /// <summary>An INT attribute (for use inside <see cref="Node"/>).</summary>
    public static void IntAttribute(ProtoMessage node, string attributeName, long value) =>
        node.Message(5, new ProtoMessage().String(1, attributeName).Int(3, value).Int(20, 2));

    /// <summary>An INTS attribute.</summary>
    public static void IntsAttribute(ProtoMessage node, string attributeName, params long[] values)
    {
        var a = new ProtoMessage().String(1, attributeName);
        foreach (var v in values) a.Int(8, v);
        node.Message(5, a.Int(20, 7));
    }

    /// <summary>A STRING attribute.</summary>
    public static void StringAttribute(ProtoMessage node, string attributeName, string value) =>
        node.Message(5, new ProtoMessage().String(1, attributeName).Bytes(4, System.Text.Encoding.UTF8.GetBytes(value)).Int(20, 3));

    /// <summary>Serialises the model (IR version 8, default-domain opset 17).</summary>
    public byte[] ToModel(string producer = "OnnxAlign.ModelForge") => ToModel(null, out _, producer);

    /// <summary>
    /// Serialises the model with its initializers' data in an external file (ONNX's external data, as exporters write
    /// models over 2 GB: <c>model.onnx</c> + <c>model.onnx_data</c>), each tensor at its offset in
    /// <paramref name="externalData"/> (a file name relative to the model); null keeps the data inside.
    /// </summary>
    public byte[] ToModel(string? externalData, out byte[] data, string producer = "OnnxAlign.ModelForge")
    {
        var graph = new ProtoMessage();
        foreach (var n in _nodes) graph.Message(1, n);
        graph.String(2, name);
        using var side = new MemoryStream();
        foreach (var (type, raw, dims, tensorName) in _initializers)
        {
            var t = new ProtoMessage();
            foreach (var d in dims) t.Int(1, d);
            t.Int(2, (int)type).String(8, tensorName);
            // As exporters do (torch's threshold), small tensors stay inside: shape constants must be readable by shape inference.
            if (externalData is null || raw.Length < 1024) t.Bytes(9, raw);
            else
            {
                static ProtoMessage Entry(string key, string value) => new ProtoMessage().String(1, key).String(2, value);
                t.Message(13, Entry("location", externalData)).Message(13, Entry("offset", side.Position.ToString(System.Globalization.CultureInfo.InvariantCulture)))
                 .Message(13, Entry("length", raw.Length.ToString(System.Globalization.CultureInfo.InvariantCulture))).Int(14, 1);
                side.Write(raw);
            }
            graph.Message(5, t);
        }
        data = side.ToArray();
        foreach (var i in _inputs) graph.Message(11, i);
        foreach (var o in _outputs) graph.Message(12, o);
        return new ProtoMessage()
            .Int(1, 8)
            .String(2, producer)
            .Message(7, graph)
            .Message(8, new ProtoMessage().String(1, "").Int(2, 17))
            .ToArray();
    }

    private string Initializer(OnnxType type, byte[] raw, long[] dims)
    {
        string tensorName = $"const_{_counter++}";
        _initializers.Add((type, raw, dims, tensorName));
        return tensorName;
    }

    private static ProtoMessage ValueInfo(string valueName, OnnxType type, long[] dims)
    {
        var shape = new ProtoMessage();
        foreach (var d in dims)
            shape.Message(1, d >= 0 ? new ProtoMessage().Int(1, d) : new ProtoMessage().String(2, d switch { -2 => "sequence", -3 => "steps", _ => "batch" }));
        var tensorType = new ProtoMessage().Int(1, (int)type).Message(2, shape);
        return new ProtoMessage().String(1, valueName).Message(2, new ProtoMessage().Message(1, tensorType));
    }
}
