using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using OnnxAlign.Core;

namespace OnnxAlign.IO;

/// <summary>A float32 array with its shape, as read from or written to a NumPy <c>.npy</c> file.</summary>
/// <param name="Data">Values in C order.</param>
/// <param name="Shape">The array's shape.</param>
public sealed record NpyArray(float[] Data, int[] Shape)
{
    /// <summary>Number of rows (the first dimension), or 1 for a scalar.</summary>
    public int Rows => Shape.Length == 0 ? 1 : Shape[0];

    /// <summary>Values per row.</summary>
    public int RowSize => Shape.Length == 0 ? 1 : Shape.Skip(1).Aggregate(1, (a, b) => a * b);
}

/// <summary>NumPy's <c>.npy</c> format (version 1.0–3.0): float32 written, float32/float64/int little-endian read.</summary>
public static partial class NpyFile
{
    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Writes a float32 array atomically.</summary>
    public static void Write(string path, ReadOnlySpan<float> data, IReadOnlyList<int> shape)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        if (count != data.Length) throw new ArgumentException($"shape [{string.Join(", ", shape)}] holds {count} values, data has {data.Length}");
        var bytes = new byte[data.Length * 4];
        for (int i = 0; i < data.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), data[i]);
        AtomicFile.Write(path, s => WriteTo(s, bytes, shape));
    }

    private static void WriteTo(Stream s, byte[] payload, IReadOnlyList<int> shape)
    {
        WriteHeader(s, shape);
        s.Write(payload);
    }

    /// <summary>
    /// Writes the float32 arrays of <paramref name="sources"/> (each [rows, ...] with the same row shape) as one array of
    /// all their rows in order, atomically, streaming the data: the bytes equal <see cref="Write"/> of the concatenation.
    /// </summary>
    /// <returns>The shape written.</returns>
    /// <exception cref="ConfigException">A source is not a readable float32 .npy array, or its rows have another shape.</exception>
    public static int[] Concatenate(string path, IReadOnlyList<string> sources)
    {
        if (sources.Count == 0) throw new ArgumentException("expected at least one source", nameof(sources));
        var parts = new List<(string Path, long Offset, long Length)>();
        int[]? rowShape = null;
        long rows = 0;
        foreach (string source in sources)
        {
            var (shape, offset) = Float32Rows(source);
            if (rowShape is null) rowShape = shape[1..];
            else if (!rowShape.AsSpan().SequenceEqual(shape.AsSpan(1)))
                throw new ConfigException($"{source}: rows of shape [{string.Join(", ", shape[1..])}], the others' are [{string.Join(", ", rowShape)}]");
            rows += shape[0];
            parts.Add((source, offset, (long)shape[0] * shape[1..].Aggregate(1L, (a, b) => a * b) * 4));
        }
        if (rows > int.MaxValue) throw new ConfigException($"{path}: {rows} rows are more than one .npy array here holds");
        int[] total = [(int)rows, .. rowShape!];
        AtomicFile.Write(path, s =>
        {
            WriteHeader(s, total);
            foreach (var (source, offset, length) in parts)
            {
                using var input = File.OpenRead(source);
                input.Seek(offset, SeekOrigin.Begin);
                input.CopyTo(s);
                if (input.Position != offset + length) throw new IOException($"{source}: changed while it was being merged");
            }
        });
        return total;
    }

    /// <summary>
    /// Reads a float32 array of rows ([rows, ...]) <paramref name="rowsPerChunk"/> rows at a time, in order, so that a
    /// pass over a file larger than memory (a merged run's samples) holds one chunk; the last chunk may be shorter.
    /// </summary>
    /// <exception cref="ConfigException">The file is not a readable float32 .npy array of rows.</exception>
    public static IEnumerable<NpyArray> ReadRows(string path, int rowsPerChunk)
    {
        if (rowsPerChunk < 1) throw new ArgumentOutOfRangeException(nameof(rowsPerChunk), rowsPerChunk, "expected ≥ 1");
        var (shape, offset) = Float32Rows(path);
        int rowSize = shape[1..].Aggregate(1, (a, b) => a * b);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        stream.Seek(offset, SeekOrigin.Begin);
        for (int first = 0; first < shape[0]; first += rowsPerChunk)
        {
            int rows = Math.Min(rowsPerChunk, shape[0] - first);
            var bytes = ReadUpTo(stream, checked(rows * rowSize * 4));
            if (bytes.Length != rows * rowSize * 4) throw new ConfigException($"{path}: changed while it was being read");
            yield return Decode(bytes, [rows, .. shape[1..]], "<f4", 4, (long)rows * rowSize);
        }
    }

    /// <summary>The shape and data offset of a float32 array of rows, checked against the file's length (header only is read).</summary>
    private static (int[] Shape, long Offset) Float32Rows(string source)
    {
        try
        {
            using var stream = File.OpenRead(source);
            var prefix = ReadUpTo(stream, 12);
            var (start, headerLength) = HeaderBounds(prefix, source);
            var head = new byte[start + headerLength];
            prefix.AsSpan(0, Math.Min(prefix.Length, head.Length)).CopyTo(head);
            var rest = ReadUpTo(stream, head.Length - Math.Min(prefix.Length, head.Length));
            if (prefix.Length > head.Length || rest.Length != head.Length - prefix.Length) throw Bad(source, "truncated header");
            rest.CopyTo(head, prefix.Length);
            var (parsed, type, _, count) = Header(head, start, headerLength, source);
            if (type != "<f4") throw Bad(source, $"dtype '{type}': expected float32 (<f4) samples");
            if (parsed.Length == 0) throw Bad(source, "a scalar, expected rows of samples");
            if (stream.Length - head.Length != count * 4) throw Bad(source, $"expected {count * 4} data bytes, found {stream.Length - head.Length}");
            return (parsed, head.Length);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw CannotRead(source, e);
        }
    }

    /// <summary>Why a .npy file could not be opened, in the file's terms (a folder, an empty name) rather than the system's.</summary>
    private static ConfigException CannotRead(string path, Exception e) =>
        path.Length == 0 ? new ConfigException("expected a .npy file, got an empty path", e)
        : Directory.Exists(path) ? new ConfigException($"{path}: is a folder, not a .npy file", e)
        : new ConfigException($"{path}: cannot read ({e.Message})", e);

    private static void WriteHeader(Stream s, IReadOnlyList<int> shape)
    {
        string dims = shape.Count == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}";
        // Pad so that magic(6) + version(2) + length(2) + header + '\n' is a multiple of 64.
        int total = 10 + header.Length + 1;
        header = header.PadRight(header.Length + (64 - total % 64) % 64) + "\n";
        s.Write(Magic);
        s.Write([1, 0]);
        Span<byte> len = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(len, (ushort)header.Length);
        s.Write(len);
        s.Write(Encoding.ASCII.GetBytes(header));
    }

    /// <summary>Reads a little-endian float32, float64, int32 or int64 array (C order) as float32.</summary>
    /// <exception cref="ConfigException">The file is missing, truncated, longer than its header says, or not a supported .npy array.</exception>
    public static NpyArray Read(string path)
    {
        try
        {
            // Bounded reads: the header says how many bytes follow, so a device such as /dev/zero or a huge file is
            // refused after a few bytes instead of read into memory.
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            var prefix = ReadUpTo(stream, 12);
            var (offset, headerLength) = HeaderBounds(prefix, path);
            var head = new byte[offset + headerLength];
            prefix.AsSpan(0, Math.Min(prefix.Length, head.Length)).CopyTo(head);
            if (prefix.Length > head.Length) throw new ConfigException($"{path}: not a readable .npy array (truncated header)");
            var rest = ReadUpTo(stream, head.Length - prefix.Length);
            if (rest.Length != head.Length - prefix.Length) throw new ConfigException($"{path}: not a readable .npy array (truncated header)");
            rest.CopyTo(head, prefix.Length);
            var (shape, type, width, count) = Header(head, offset, headerLength, path);
            long payloadLength = count * width;
            var bytes = new byte[head.Length + payloadLength];
            head.CopyTo(bytes, 0);
            var payload = ReadUpTo(stream, (int)payloadLength);
            payload.CopyTo(bytes, head.Length);
            bool longer = stream.ReadByte() >= 0;
            if (payload.Length != payloadLength || longer)
                throw new ConfigException($"{path}: not a readable .npy array (expected {payloadLength} data bytes, found {(longer ? "more" : payload.Length.ToString(CultureInfo.InvariantCulture))})");
            return Decode(bytes.AsSpan(head.Length), shape, type, width, count);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw CannotRead(path, e);
        }
    }

    private static byte[] ReadUpTo(Stream stream, int count)
    {
        var buffer = new byte[count];
        int read = 0, n;
        while (read < count && (n = stream.Read(buffer, read, count - read)) > 0) read += n;
        return read == count ? buffer : buffer[..read];
    }

    /// <summary>Parses the bytes of a .npy file; <paramref name="source"/> names it in errors.</summary>
    public static NpyArray Parse(ReadOnlySpan<byte> bytes, string source)
    {
        var (offset, headerLength) = HeaderBounds(bytes, source);
        if (bytes.Length < offset + headerLength) throw Bad(source, "truncated header");
        var (shape, type, width, count) = Header(bytes, offset, headerLength, source);
        var payload = bytes[(offset + headerLength)..];
        if (payload.Length != count * width) throw Bad(source, $"expected {count * width} data bytes, found {payload.Length}");
        return Decode(payload, shape, type, width, count);
    }

    private static ConfigException Bad(string source, string why) => new($"{source}: not a readable .npy array ({why})");

    // Where the header starts and how long it is (format versions 1–3).
    private static (int Offset, int HeaderLength) HeaderBounds(ReadOnlySpan<byte> bytes, string source)
    {
        if (bytes.Length < 10 || !bytes[..6].SequenceEqual(Magic)) throw Bad(source, "missing NumPy magic");
        int major = bytes[6];
        if (major == 1) return (10, BinaryPrimitives.ReadUInt16LittleEndian(bytes[8..]));
        if (major is 2 or 3)
        {
            if (bytes.Length < 12) throw Bad(source, "truncated header");
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(bytes[8..]);
            if (len > 1 << 20) throw Bad(source, "header too long");
            return (12, (int)len);
        }
        throw Bad(source, $"unsupported version {major}");
    }

    private static (int[] Shape, string Type, int Width, long Count) Header(ReadOnlySpan<byte> bytes, int offset, int headerLength, string source)
    {
        string header = Encoding.Latin1.GetString(bytes.Slice(offset, headerLength));
        var descr = DescrPattern().Match(header);
        var fortran = FortranPattern().Match(header);
        var shapeMatch = ShapePattern().Match(header);
        if (!descr.Success || !fortran.Success || !shapeMatch.Success) throw Bad(source, "malformed header");
        if (fortran.Groups[1].Value == "True") throw Bad(source, "Fortran order is not supported");
        int[] shape;
        try
        {
            shape = shapeMatch.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(d => int.Parse(d, NumberStyles.None, CultureInfo.InvariantCulture)).ToArray();
        }
        catch (Exception e) when (e is FormatException or OverflowException) { throw Bad(source, "malformed shape"); }
        long count = 1;
        foreach (int d in shape) { count *= d; if (count > int.MaxValue) throw Bad(source, "array too large"); }
        string type = descr.Groups[1].Value;
        int width = type switch { "<f4" or "<i4" => 4, "<f8" or "<i8" => 8, "|u1" or "|i1" or "|b1" => 1, _ => 0 };
        if (width == 0) throw Bad(source, $"dtype '{type}' is not supported (expected <f4, <f8, <i4, <i8 or bytes)");
        if (count * width > int.MaxValue) throw Bad(source, "array too large");
        return (shape, type, width, count);
    }

    private static NpyArray Decode(ReadOnlySpan<byte> payload, int[] shape, string type, int width, long count)
    {
        var data = new float[count];
        for (int i = 0; i < data.Length; i++)
        {
            var p = payload.Slice(i * width, width);
            data[i] = type switch
            {
                "<f4" => BinaryPrimitives.ReadSingleLittleEndian(p),
                "<f8" => (float)BinaryPrimitives.ReadDoubleLittleEndian(p),
                "<i4" => BinaryPrimitives.ReadInt32LittleEndian(p),
                "<i8" => BinaryPrimitives.ReadInt64LittleEndian(p),
                "|i1" => (sbyte)p[0],
                _ => p[0],
            };
        }
        return new NpyArray(data, shape);
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([^']*)'")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")]
    private static partial Regex ShapePattern();
}
